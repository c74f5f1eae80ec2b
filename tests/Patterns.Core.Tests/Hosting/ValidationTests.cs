using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;
using Patterns.Hosting;
using Patterns.Queues;
using Patterns.RequestResponse;

namespace Patterns.Core.Tests.Hosting;

public sealed record Memo(int Id);

/// <summary>What the start-up validation of the host's options and topology refuses, and what it lets through at the limits.</summary>
public sealed class ValidationTests
{
    [Fact]
    public async Task Start_InvalidTopologyAndHostOptions_FailsNamingEachProblem()
    {
        using var host = TestHost.Build(b =>
        {
            b.AddPatterns(p => p.Configure(o =>
            {
                o.InboxCapacity = 0;
                o.InboxRetryDelay = TimeSpan.Zero;
                o.InboxRetention = TimeSpan.Zero;
            }));
            b.AddMessageQueue(q => q
                .AddQueue(" ")
                .AddConsumer<Note>(" ", (_, _, _) => default, o => o.ConsumerGroup = "blank-queue")
                .AddConsumer<Note>("first", (_, _, _) => default, o => o.ConsumerGroup = "shared")
                .AddConsumer<Note>("second", (_, _, _) => default, o => o.ConsumerGroup = "shared")
                .AddConsumer<Note>("mixed", (_, _, _) => default)
                .AddConsumer<Memo>("mixed", (_, _, _) => default)
                .AddConsumer<Note>("grouped", (_, _, _) => default, o => o.ConsumerGroup = " ")
                .AddConsumer<Note>("timed", (_, _, _) => default, o => o.AttemptTimeout = TimeSpan.Zero));
            b.AddRequestResponse(r => r.Configure(o => o.RequestQueuePrefix = " "));
        });

        Exception? thrown = null;
        try
        {
            await host.StartAsync();
        }
        catch (Exception ex)
        {
            thrown = ex;
        }

        thrown.Should().NotBeNull("invalid options must fail the host's start");
        var messages = Failures(thrown!);
        messages.Should().Contain(m => m.Contains("PatternsOptions.InboxCapacity must be at least 1 (was 0)"));
        messages.Should().Contain(m => m.Contains("PatternsOptions.InboxRetryDelay must be positive"));
        messages.Should().Contain(m => m.Contains("PatternsOptions.InboxRetention must be positive or Timeout.InfiniteTimeSpan"));
        messages.Should().Contain(m => m.Contains("A queue has an empty name."));
        messages.Should().Contain(m => m.Contains("'blank-queue'") && m.Contains("the queue name is empty"));
        messages.Should().Contain(m => m.Contains("consumer group 'shared' is also used by") && m.Contains("one group consumes from one address"));
        messages.Should().Contain(m => m.Contains("consumer group 'mixed' also handles") && m.Contains("must handle the same message type"));
        messages.Should().Contain(m => m.Contains("ConsumerGroup must not be blank"));
        messages.Should().Contain(m => m.Contains("'timed'") && m.Contains("AttemptTimeout must be positive"));
        messages.Should().Contain(m => m.Contains("RequestResponseOptions.RequestQueuePrefix must not be empty."));
    }

    [Fact]
    public async Task Start_OptionsAtTheirLimits_Starts()
    {
        using var host = TestHost.Build(b =>
        {
            b.AddPatterns(p => p.Configure(o =>
            {
                o.ShutdownTimeout = TimeSpan.Zero;
                o.InboxCapacity = 1;
                o.InboxRetryDelay = TimeSpan.FromTicks(1);
                o.InboxRetention = Timeout.InfiniteTimeSpan;
            }));
            b.AddMessageQueue(q => q.AddConsumer<Note>("timed", (_, _, _) => default, o => o.AttemptTimeout = TimeSpan.FromMilliseconds(10)));
            b.AddRequestResponse(r => r.Configure(o => o.DefaultTimeout = RequestResponseOptions.MaxTimeout));
        });

        await host.StartAsync();
        await host.StopAsync();
    }

    private static List<string> Failures(Exception exception) => exception switch
    {
        OptionsValidationException options => [.. options.Failures],
        AggregateException aggregate => [.. aggregate.InnerExceptions.SelectMany(Failures)],
        _ => [exception.Message],
    };
}
