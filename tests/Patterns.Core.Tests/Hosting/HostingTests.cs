using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;
using Microsoft.Extensions.Time.Testing;
using Patterns.Hosting;
using Patterns.Messaging;
using Patterns.PubSub;
using Patterns.Queues;
using Patterns.RequestResponse;
using Patterns.Testing;
using Patterns.Transport;

namespace Patterns.Core.Tests.Hosting;

public sealed record Note(int Id);

public sealed class HostingTests
{
    [Fact]
    public async Task Start_InvalidOptions_FailsListingEveryProblem()
    {
        using var host = TestHost.Build(b =>
        {
            b.AddPatterns(p => p.Configure(o => o.ShutdownTimeout = TimeSpan.FromSeconds(-1)));
            b.AddPubSub(ps => ps
                .Subscribe<Note>((_, _, _) => default, "notes..bad", o => o.ConsumerGroup = "g1")
                .Subscribe<Note>((_, _, _) => default, "notes", o => { o.ConsumerGroup = "g2"; o.Concurrency = 0; o.Capacity = 0; o.RedeliveryDelay = TimeSpan.FromSeconds(-5); }));
            b.AddMessageQueue(q => q.AddQueue("q", o => o.Capacity = -1));
            b.AddRequestResponse(r => r
                .AddHandler<Note, Note>((n, _) => new(n))
                .AddHandler<Note, Note>((n, _) => new(n))
                .Configure(o => o.DefaultTimeout = TimeSpan.Zero));
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
        var messages = Flatten(thrown!);
        messages.Should().Contain(m => m.Contains("notes..bad") && m.Contains("empty segment"));
        messages.Should().Contain(m => m.Contains("'g2'") && m.Contains("Concurrency"));
        messages.Should().Contain(m => m.Contains("'g2'") && m.Contains("Capacity"));
        messages.Should().Contain(m => m.Contains("'g2'") && m.Contains("RedeliveryDelay"));
        messages.Should().Contain(m => m.Contains("Queue 'q'") && m.Contains("Capacity"));
        messages.Should().Contain(m => m.Contains("already has handler"));
        messages.Should().Contain(m => m.Contains("DefaultTimeout"));
        messages.Should().Contain(m => m.Contains("ShutdownTimeout"));
    }

    [Fact]
    public async Task Start_InvalidPollyRetryOptions_FailsAtStartNotOnFirstMessage()
    {
        using var host = TestHost.Build(b => b.AddMessageQueue(q => q.AddConsumer<Note>("notes", (_, _, _) => default,
            o => o.Retry = new Polly.Retry.RetryStrategyOptions { MaxRetryAttempts = -3 })));

        var act = () => host.StartAsync();

        (await act.Should().ThrowAsync<OptionsValidationException>()).Which.Message.Should().Contain("MaxRetryAttempts");
    }

    [Fact]
    public async Task Stop_DrainsInFlightAndBufferedMessages()
    {
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var handled = 0;
        var host = await TestHost.StartAsync(b => b.AddMessageQueue(q => q.AddConsumer<Note>("drain", async (_, _, _) =>
        {
            started.TrySetResult();
            await gate.Task;
            Interlocked.Increment(ref handled);
        }, o => o.Concurrency = 2)));
        var sender = host.Services.GetRequiredService<IQueueSender>();
        for (var i = 0; i < 100; i++)
        {
            await sender.SendAsync("drain", new Note(i));
        }

        await started.Task.WaitAsync(TestHost.Wait);
        var stopping = host.StopAsync();
        stopping.IsCompleted.Should().BeFalse();
        gate.SetResult();
        await stopping.WaitAsync(TestHost.Wait);

        Volatile.Read(ref handled).Should().Be(100);
        host.Dispose();
    }

    [Fact]
    public async Task Stop_DeadlinePasses_CancelsHandlersAndFinishes()
    {
        var fake = new FakeTimeProvider();
        var time = new TimerTracker(fake);
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var cancelled = false;
        var host = await TestHost.StartAsync(b =>
        {
            b.AddPatterns(p => p.Configure(o => o.ShutdownTimeout = TimeSpan.FromSeconds(10)));
            b.AddMessageQueue(q => q.AddConsumer<Note>("stuck", async (_, _, ct) =>
            {
                started.TrySetResult();
                try
                {
                    await Task.Delay(Timeout.InfiniteTimeSpan, ct);
                }
                catch (OperationCanceledException)
                {
                    cancelled = true;
                    throw;
                }
            }, o => o.Retry = null));
        }, time);
        await host.Services.GetRequiredService<IQueueSender>().SendAsync("stuck", new Note(1));
        await started.Task.WaitAsync(TestHost.Wait);

        var stopping = host.StopAsync();
        await time.WaitForPendingTimersAsync().WaitAsync(TestHost.Wait);
        fake.Advance(TimeSpan.FromSeconds(10));
        await stopping.WaitAsync(TestHost.Wait);

        cancelled.Should().BeTrue();
        host.Dispose();
    }

    [Fact]
    public void AddPatterns_CalledTwice_RegistersSharedServicesOnce()
    {
        var services = new ServiceCollection();

        services.AddPatterns();
        services.AddPubSub();
        services.AddMessageQueue();
        services.AddRequestResponse();
        services.AddPatterns();

        services.Count(d => d.ServiceType == typeof(IHostedService)).Should().Be(2, "the messaging host and the inbox pruner, each once");
        services.Count(d => d.ServiceType == typeof(MessageTransport)).Should().Be(1);
        services.Count(d => d.ServiceType == typeof(IPublisher)).Should().Be(1);
        using var provider = services.BuildServiceProvider();
        provider.GetRequiredService<IPublisher>().Should().BeSameAs(provider.GetRequiredService<IQueueSender>());
        provider.GetRequiredService<IRequestClient>().Should().NotBeNull();
    }

    [Fact]
    public async Task UseTransport_CustomFactory_ReplacesInMemoryDefault()
    {
        MessageTransport? created = null;
        using var host = TestHost.Build(b => b.AddPatterns(p => p.UseTransport(_ => created = Patterns.InMemory.InMemoryTransport.Create())), harness: false);

        var resolved = host.Services.GetRequiredService<MessageTransport>();

        resolved.Should().BeSameAs(created);
        await Task.CompletedTask;
    }

    private static List<string> Flatten(Exception exception)
    {
        var messages = new List<string>();
        void Walk(Exception e)
        {
            if (e is OptionsValidationException ove)
            {
                messages.AddRange(ove.Failures);
            }

            messages.Add(e.Message);
            if (e is AggregateException agg)
            {
                foreach (var inner in agg.InnerExceptions)
                {
                    Walk(inner);
                }
            }
        }

        Walk(exception);
        return messages;
    }
}
