using Microsoft.Extensions.DependencyInjection;
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

    [Fact]
    public async Task Start_TwoDelegatesOnOneTopicWithoutGroups_FailsNamingTheSharedDefaultGroup()
    {
        var messages = await StartFailuresAsync(b => b.AddPubSub(p => p
            .Subscribe<Memo>((_, _, _) => default, "memos")
            .Subscribe<Memo>((_, _, _) => default, "memos")));

        messages.Should().ContainSingle().Which.Should().Be(
            "subscription 'memos:delegate<Memo>' (delegate<Memo> on topic 'memos'): its default consumer group 'memos:delegate<Memo>' is also the default group of "
            + "subscription 'memos:delegate<Memo>' (delegate<Memo> on topic 'memos'), so delegate<Memo> and delegate<Memo> would compete for the topic's messages "
            + "instead of each receiving every one. Set ConsumerOptions.ConsumerGroup on at least one of them.");
    }

    [Fact]
    public async Task Start_AQueueConsumerAndASubscriptionWithTheSameDefaultGroup_FailsSayingOneGroupConsumesFromOneAddress()
    {
        // A queue consumer's default group is its queue; this queue is named like the subscription's default group.
        var messages = await StartFailuresAsync(b =>
        {
            b.AddMessageQueue(q => q.AddConsumer<Memo>("memos:delegate<Memo>", (_, _, _) => default));
            b.AddPubSub(p => p.Subscribe<Memo>((_, _, _) => default, "memos"));
        });

        messages.Should().ContainSingle().Which.Should().Be(
            "subscription 'memos:delegate<Memo>' (delegate<Memo> on topic 'memos'): consumer group 'memos:delegate<Memo>' is also used by "
            + "queue consumer 'memos:delegate<Memo>' (delegate<Memo> on queue 'memos:delegate<Memo>'); one group consumes from one address.");
    }

    [Fact]
    public async Task Start_InvalidRequestHandlers_FailsNamingEachHandlerAndItsRequestType()
    {
        var messages = await StartFailuresAsync(b => b.AddRequestResponse(r => r
            .AddHandler<Memo, int>((m, _) => new(m.Id), o => o.MaxConcurrentCalls = 0)
            .AddHandler<Note, int>((n, _) => new(n.Id), o => o.AttemptTimeout = TimeSpan.Zero)));

        messages.Should().Contain(
            "Request handler delegate<Memo> for 'Patterns.Core.Tests.Hosting.Memo': MaxConcurrentCalls: The field RequestHandlerOptions.MaxConcurrentCalls must be between 1 and 2147483647.");
        messages.Should().Contain("Request handler delegate<Note> for 'Patterns.Core.Tests.Hosting.Note': AttemptTimeout must be positive (was 00:00:00).");
    }

    [Fact]
    public async Task Start_InvalidRetryOptions_FailsWithPollysValidationMessageOnOneLine()
    {
        var messages = await StartFailuresAsync(b => b.AddMessageQueue(q => q.AddConsumer<Memo>(
            "retried", (_, _, _) => default, o => o.Retry = new Polly.Retry.RetryStrategyOptions { MaxRetryAttempts = 0 })));

        var message = messages.Should().ContainSingle().Which;
        message.Should().StartWith("queue consumer 'retried' (delegate<Memo> on queue 'retried'): ");
        message.Should().Contain("Validation Errors: The field MaxRetryAttempts must be between");
        message.Should().NotContain("\n");
    }

    [Fact]
    public async Task Start_APipelineThatRefusesItsArguments_FailsNamingTheConsumer()
    {
        var messages = await StartFailuresAsync(b => b.AddMessageQueue(q => q.AddConsumer<Memo>(
            "configured", (_, _, _) => default, o => o.ConfigurePipeline = _ => throw new ArgumentException("the custom strategy needs a name"))));

        messages.Should().ContainSingle().Which.Should().Be(
            "queue consumer 'configured' (delegate<Memo> on queue 'configured'): the custom strategy needs a name");
    }

    [Fact]
    public async Task Start_ZeroMaxConcurrentCallsOnAConsumer_FailsOnceWithTheOptionsMessage()
    {
        var thrown = await StartExceptionAsync(b => b.AddMessageQueue(q => q.AddConsumer<Memo>(
            "limited", (_, _, _) => default, o => o.MaxConcurrentCalls = 0)));

        // The options check fails first; the pipeline is not built as well, which would repeat the problem as SemaphoreSlim's message.
        thrown.Should().BeOfType<OptionsValidationException>().Which.Failures.Should().Equal(
            "queue consumer 'limited' (delegate<Memo> on queue 'limited'): MaxConcurrentCalls: The field ConsumerOptions.MaxConcurrentCalls must be between 1 and 2147483647.");
    }

    [Fact]
    public async Task Start_ZeroMaxConcurrentCallsOnARequestHandler_FailsOnceWithTheOptionsMessage()
    {
        var thrown = await StartExceptionAsync(b => b.AddRequestResponse(r => r
            .AddHandler<Memo, int>((m, _) => new(m.Id), o => o.MaxConcurrentCalls = 0)));

        thrown.Should().BeOfType<OptionsValidationException>().Which.Failures.Should().Equal(
            "Request handler delegate<Memo> for 'Patterns.Core.Tests.Hosting.Memo': MaxConcurrentCalls: The field RequestHandlerOptions.MaxConcurrentCalls must be between 1 and 2147483647.");
    }

    [Fact]
    public async Task Start_APipelineThatRefusesItsArgumentsOnTwoLines_FailsWithTheMessageOnOneLine()
    {
        var messages = await StartFailuresAsync(b => b.AddMessageQueue(q => q.AddConsumer<Memo>(
            "configured", (_, _, _) => default, o => o.ConfigurePipeline = _ => throw new ArgumentOutOfRangeException("permits", 0, "Must be positive."))));

        // ArgumentOutOfRangeException puts "Actual value was 0." on a line of its own.
        messages.Should().ContainSingle().Which.Should().Be(
            "queue consumer 'configured' (delegate<Memo> on queue 'configured'): Must be positive. (Parameter 'permits') Actual value was 0.");
    }

    [Fact]
    public async Task Start_InvalidTransportConcurrency_FailsNamingTheOption()
    {
        var messages = await StartFailuresAsync(b => b.AddRequestResponse(r => r.Configure(o => o.TransportConcurrency = 0)));

        messages.Should().Equal("TransportConcurrency: The field RequestResponseOptions.TransportConcurrency must be between 1 and 1024.");
    }

    [Fact]
    public async Task Start_InvalidInMemoryPayloadLimit_FailsNamingTheOption()
    {
        var messages = await StartFailuresAsync(b => b.Services.Configure<Patterns.InMemory.InMemoryTransportOptions>(o => o.MaxPayloadBytes = 0));

        messages.Should().Equal("MaxPayloadBytes: The field InMemoryTransportOptions.MaxPayloadBytes must be between 1 and 2147483647.");
    }

    [Fact]
    public void Validators_ValidOptions_Succeed()
    {
        new TopologyValidator().Validate(null, new MessagingTopology()).Succeeded.Should().BeTrue();
        new PatternsOptionsValidator().Validate(null, new PatternsOptions()).Succeeded.Should().BeTrue();
        new RequestResponseOptionsValidator().Validate(null, new RequestResponseOptions()).Succeeded.Should().BeTrue();
    }

    [Fact]
    public void PatternBuilders_WithoutAddPatterns_RegisterTheSharedServices()
    {
        new ServiceCollection().AddMessageQueue().Services.Should().Contain(d => d.ServiceType == typeof(IQueueSender));
        new ServiceCollection().AddPubSub().Services.Should().Contain(d => d.ServiceType == typeof(Patterns.PubSub.IPublisher));
        new ServiceCollection().AddRequestResponse().Services.Should().Contain(d => d.ServiceType == typeof(IRequestClient));
    }

    private static async Task<List<string>> StartFailuresAsync(Action<HostApplicationBuilder> configure) =>
        Failures(await StartExceptionAsync(configure));

    private static async Task<Exception> StartExceptionAsync(Action<HostApplicationBuilder> configure)
    {
        using var host = TestHost.Build(configure);
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
        return thrown!;
    }

    private static List<string> Failures(Exception exception) => exception switch
    {
        OptionsValidationException options => [.. options.Failures],
        AggregateException aggregate => [.. aggregate.InnerExceptions.SelectMany(Failures)],
        _ => [exception.Message],
    };
}
