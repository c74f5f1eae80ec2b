using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Patterns.Batching;
using Patterns.Messaging;
using Patterns.Queues;
using Patterns.Transport;

namespace Patterns.Core.Tests.Hosting;

/// <summary>
/// A handler that stops because its host stops (<see cref="HandlerStoppedException"/>) has its delivery released, not
/// failed: it is not retried, does not count towards <see cref="ConsumerOptions.MaxRedeliveries"/> and is never
/// dead-lettered for it; on the in-memory transport it goes to the group's other consumer, or waits for the next one.
/// Any other cancellation is a failed attempt, as before.
/// </summary>
public sealed class HandlerStoppedTests
{
    /// <summary>
    /// With no redeliveries allowed and a retry pipeline of three attempts, a handler that throws the exception while its
    /// host stops is not retried (it ran once), the release counts no delivery (the other host's consumer gets it with the
    /// count still 0 and the release mark), and nothing is dead-lettered.
    /// </summary>
    [Fact]
    public async Task HandlerStopped_ReleasesTheDeliveryUncounted_NotRetriedByThePipeline_NorDeadLettered()
    {
        await using var transport = Patterns.InMemory.InMemoryTransport.Create();
        var inHand = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var component = new StoppingComponent();
        var calls = 0;
        using var first = await StartOnAsync(
            transport,
            async (_, _, _) =>
            {
                Interlocked.Increment(ref calls);
                inHand.TrySetResult();
                await component.Stopped.WaitAsync(TestHost.Wait);
                throw new HandlerStoppedException();
            },
            s => s.AddSingleton<IHostedService>(component),
            o => o.Retry = new Polly.Retry.RetryStrategyOptions { MaxRetryAttempts = 3, Delay = TimeSpan.Zero, ShouldHandle = _ => Polly.PredicateResult.True() });
        await first.Services.GetRequiredService<IQueueSender>().SendAsync("handover", new Note(1));
        await inHand.Task.WaitAsync(TestHost.Wait);
        await first.StopAsync().WaitAsync(TestHost.Wait);

        var received = new TaskCompletionSource<Envelope>(TaskCreationOptions.RunContinuationsAsynchronously);
        using var next = await StartReceiverAsync(transport, received);
        var redelivered = await received.Task.WaitAsync(TestHost.Wait);

        Volatile.Read(ref calls).Should().Be(1, "the retry pipeline does not retry a stopped handler");
        await ShouldBeReleasedUncountedAsync(redelivered, transport);
        await next.StopAsync();
    }

    /// <summary>
    /// A handler that throws <see cref="HandlerStoppedException"/> while its host is NOT stopping (misuse, or a component
    /// that stopped on its own) fails the delivery: counted, redelivered up to <see cref="ConsumerOptions.MaxRedeliveries"/>,
    /// then dead-lettered. Released uncounted, it would come back forever. It is still not retried in process.
    /// </summary>
    [Fact]
    public async Task HandlerStopped_WhileTheHostIsNotStopping_CountsAsAFailedDelivery_AndIsDeadLettered()
    {
        using var consumer = await StartFailingAsync(
            "stopped-misuse",
            () => throw new HandlerStoppedException("not stopping at all"),
            new Polly.Retry.RetryStrategyOptions { MaxRetryAttempts = 3, Delay = TimeSpan.Zero, ShouldHandle = _ => Polly.PredicateResult.True() });
        var letters = await consumer.Outcome;

        letters.Should().ContainSingle("the message was dead-lettered, not handed back uncounted again and again");
        letters[0].Reason.Should().Contain(nameof(HandlerStoppedException)).And.Contain("delivery 2");
        lock (consumer.Counts)
        {
            consumer.Counts.Should().Equal([0, 1], "each attempt counted a delivery, and the pipeline retried none");
        }

        await consumer.Host.StopAsync();
    }

    /// <summary>
    /// An <see cref="OperationCanceledException"/> that is not the host's stop (a call the handler cancelled itself, a
    /// timeout) is a failed attempt: it is counted, redelivered up to <see cref="ConsumerOptions.MaxRedeliveries"/>, then
    /// dead-lettered with the exception.
    /// </summary>
    [Fact]
    public async Task OperationCanceled_NotCausedByAStop_CountsAsAFailedDelivery_AndIsDeadLettered()
    {
        using var consumer = await StartFailingAsync(
            "cancelled",
            () =>
            {
                using var own = new CancellationTokenSource();
                own.Cancel();
                own.Token.ThrowIfCancellationRequested();
            },
            retry: null);
        var letters = await consumer.Outcome;

        letters[0].Reason.Should().Contain(nameof(OperationCanceledException)).And.Contain("delivery 2");
        lock (consumer.Counts)
        {
            consumer.Counts.Should().Equal([0, 1], "each cancelled attempt counted a delivery");
        }

        await consumer.Host.StopAsync();
    }

    /// <summary>
    /// Two hosts share one in-memory transport. The first takes the message; a component of that host stops (before its
    /// consumers, as a hosted service registered after AddPatterns does), and the handler, waiting on it, throws
    /// <see cref="HandlerStoppedException"/>. The release is kept while the host drains (it does not come straight back to
    /// the stopping handler) and, once the consumer is unbound, goes to the other host's consumer, uncounted.
    /// </summary>
    [Fact]
    public async Task InMemory_AMessageReleasedByAStoppingHost_GoesToTheGroupsOtherConsumer_Uncounted()
    {
        await using var transport = Patterns.InMemory.InMemoryTransport.Create();
        var inHand = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var component = new StoppingComponent();
        var firstCalls = 0;
        using var first = await StartOnAsync(transport, async (_, _, _) =>
        {
            Interlocked.Increment(ref firstCalls);
            inHand.TrySetResult();
            await component.Stopped.WaitAsync(TestHost.Wait);
            throw new HandlerStoppedException("the component stopped");
        }, s => s.AddSingleton<IHostedService>(component));
        await first.Services.GetRequiredService<IQueueSender>().SendAsync("handover", new Note(7));
        await inHand.Task.WaitAsync(TestHost.Wait);

        var received = new TaskCompletionSource<Envelope>(TaskCreationOptions.RunContinuationsAsynchronously);
        using var second = await StartReceiverAsync(transport, received);
        await first.StopAsync().WaitAsync(TestHost.Wait);

        var envelope = await received.Task.WaitAsync(TestHost.Wait);
        Volatile.Read(ref firstCalls).Should().Be(1, "the release was kept while the first host drained, not handed straight back to it");
        await ShouldBeReleasedUncountedAsync(envelope, transport);
        await second.StopAsync();
    }

    /// <summary>
    /// The only consumer's host stops with the message released: it waits in the queue, and the consumer of a host started
    /// later on the same transport gets it, uncounted.
    /// </summary>
    [Fact]
    public async Task InMemory_AMessageReleasedByTheOnlyConsumer_WaitsForTheNextStart_Uncounted()
    {
        await using var transport = Patterns.InMemory.InMemoryTransport.Create();
        var inHand = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var component = new StoppingComponent();
        using var first = await StartOnAsync(transport, async (_, _, _) =>
        {
            inHand.TrySetResult();
            await component.Stopped.WaitAsync(TestHost.Wait);
            throw new HandlerStoppedException("the component stopped");
        }, s => s.AddSingleton<IHostedService>(component));
        await first.Services.GetRequiredService<IQueueSender>().SendAsync("handover", new Note(8));
        await inHand.Task.WaitAsync(TestHost.Wait);
        await first.StopAsync().WaitAsync(TestHost.Wait);

        var received = new TaskCompletionSource<Envelope>(TaskCreationOptions.RunContinuationsAsynchronously);
        using var next = await StartReceiverAsync(transport, received);

        var envelope = await received.Task.WaitAsync(TestHost.Wait);
        await ShouldBeReleasedUncountedAsync(envelope, transport);
        await next.StopAsync();
    }

    /// <summary>
    /// A batch handler that throws the exception while its host stops is not retried in process; its message is released
    /// uncounted (kept while the host drains, not handed straight back to the stopping handler), never dead-lettered, and
    /// the consumer of a host started later gets it with the count still 0 and the release mark.
    /// </summary>
    [Fact]
    public async Task Batch_HandlerStoppedWhileItsHostStops_ReleasedUncounted_NotRetried_NorDeadLettered()
    {
        await using var transport = Patterns.InMemory.InMemoryTransport.Create();
        var inHand = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var component = new StoppingComponent();
        var calls = 0;
        using var first = await TestHost.StartAsync(
            b =>
            {
                b.AddBatching(x => x.AddBatchHandler<Note>(
                    TransportAddress.Queue("handover"),
                    async (_, _) =>
                    {
                        Interlocked.Increment(ref calls);
                        inHand.TrySetResult();
                        await component.Stopped.WaitAsync(TestHost.Wait);
                        throw new HandlerStoppedException("the component stopped");
                    },
                    o => { o.MaxCount = 1; o.MaxAge = Timeout.InfiniteTimeSpan; o.MaxRedeliveries = 0; o.Retry!.Delay = TimeSpan.Zero; o.Retry.MaxRetryAttempts = 2; }));
                b.Services.AddSingleton<IHostedService>(component);
            },
            patterns: p => p.UseTransport(_ => new SharedTransport(transport)),
            harness: false);
        await first.Services.GetRequiredService<IQueueSender>().SendAsync("handover", new Note(9));
        await inHand.Task.WaitAsync(TestHost.Wait);
        await first.StopAsync().WaitAsync(TestHost.Wait);

        var received = new TaskCompletionSource<Envelope>(TaskCreationOptions.RunContinuationsAsynchronously);
        using var next = await StartReceiverAsync(transport, received);

        var envelope = await received.Task.WaitAsync(TestHost.Wait);
        Volatile.Read(ref calls).Should().Be(1, "not retried in process, and the release was not handed straight back to the stopping handler");
        await ShouldBeReleasedUncountedAsync(envelope, transport);
        await next.StopAsync();
    }

    /// <summary>A host on a shared transport whose consumer of "handover" hands the first envelope it gets to <paramref name="received"/>.</summary>
    private static Task<IHost> StartReceiverAsync(MessageTransport transport, TaskCompletionSource<Envelope> received) =>
        StartOnAsync(transport, (_, context, _) =>
        {
            received.TrySetResult(context.Envelope);
            return default;
        });

    /// <summary>What a release leaves: no delivery counted, the release mark, and nothing dead-lettered.</summary>
    private static async Task ShouldBeReleasedUncountedAsync(Envelope envelope, MessageTransport transport)
    {
        envelope.DeliveryCount.Should().Be(0, "a release counts no delivery");
        envelope.TryGetHeader(EnvelopeHeaders.Released, out _).Should().BeTrue("a released message carries the release mark");
        (await transport.PeekDeadLettersAsync("handover", 10)).Should().BeEmpty("a released message is never dead-lettered");
    }

    /// <summary>
    /// Starts a host whose consumer of <paramref name="queue"/> records each delivery's count and then runs
    /// <paramref name="fail"/> (one redelivery allowed, at once), and sends it one message. Its outcome is the queue's dead
    /// letters once there is one, or an empty list after five deliveries: a failure that is never counted would come
    /// back forever.
    /// </summary>
    private static async Task<FailingConsumer> StartFailingAsync(string queue, Action fail, Polly.Retry.RetryStrategyOptions? retry)
    {
        var counts = new List<int>();
        var looped = new TaskCompletionSource<IReadOnlyList<DeadLetterMessage>>(TaskCreationOptions.RunContinuationsAsynchronously);
        var host = await TestHost.StartAsync(b => b.AddMessageQueue(q => q.AddConsumer<Note>(queue, (_, context, _) =>
        {
            lock (counts)
            {
                counts.Add(context.DeliveryCount);
                if (counts.Count >= 5)
                {
                    looped.TrySetResult([]);
                    return default;
                }
            }

            fail();
            return default;
        }, o =>
        {
            o.MaxRedeliveries = 1;
            o.RedeliveryDelay = TimeSpan.Zero;
            o.Retry = retry;
        })), harness: false);

        await host.Services.GetRequiredService<IQueueSender>().SendAsync(queue, new Note(1));
        var deadLettered = DeadLetters.WaitForAsync(host.Services.GetRequiredService<IDeadLetterQueue>(), queue, 1);
        return new FailingConsumer(host, counts, Task.WhenAny(deadLettered, looped.Task).Unwrap().WaitAsync(TestHost.Wait));
    }

    /// <summary>A host with a consumer that fails every delivery, the counts its deliveries carried, and its outcome.</summary>
    private sealed record FailingConsumer(IHost Host, List<int> Counts, Task<IReadOnlyList<DeadLetterMessage>> Outcome) : IDisposable
    {
        public void Dispose() => Host.Dispose();
    }

    /// <summary>A host on a shared transport (not disposed with the host) with one consumer of "handover" that allows no redelivery.</summary>
    private static Task<IHost> StartOnAsync(
        MessageTransport transport, Func<Note, MessageContext, CancellationToken, ValueTask> handler, Action<IServiceCollection>? services = null, Action<ConsumerOptions>? configure = null) =>
        TestHost.StartAsync(
            b =>
            {
                b.AddMessageQueue(q => q.AddConsumer("handover", handler, o =>
                {
                    o.MaxRedeliveries = 0;
                    configure?.Invoke(o);
                }));
                services?.Invoke(b.Services);
            },
            patterns: p => p.UseTransport(_ => new SharedTransport(transport)),
            harness: false);

    /// <summary>A component that stops before the host's consumers (registered after AddPatterns, so stopped first).</summary>
    private sealed class StoppingComponent : IHostedService
    {
        private readonly TaskCompletionSource _stopped = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public Task Stopped => _stopped.Task;

        public Task StartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

        public Task StopAsync(CancellationToken cancellationToken)
        {
            _stopped.TrySetResult();
            return Task.CompletedTask;
        }
    }

    /// <summary>Passes everything to a transport that outlives the host (its disposal is the test's).</summary>
    private sealed class SharedTransport(MessageTransport inner) : MessageTransport
    {
        public override string SystemName => inner.SystemName;

        public override bool IsInProcess => inner.IsInProcess;

        public override int MaxPayloadBytes => inner.MaxPayloadBytes;

        public override ValueTask DeclareQueueAsync(string queue, QueueSettings settings, CancellationToken cancellationToken = default) => inner.DeclareQueueAsync(queue, settings, cancellationToken);

        public override ValueTask SendAsync(string queue, Envelope envelope, CancellationToken cancellationToken = default) => inner.SendAsync(queue, envelope, cancellationToken);

        public override ValueTask<bool> PublishAsync(string topic, Envelope envelope, CancellationToken cancellationToken = default) => inner.PublishAsync(topic, envelope, cancellationToken);

        public override ValueTask<TransportSubscription> SubscribeAsync(SubscriptionRequest request, DeliveryHandler handler, CancellationToken cancellationToken = default) =>
            inner.SubscribeAsync(request, handler, cancellationToken);

        public override ValueTask<IReadOnlyList<DeadLetterMessage>> PeekDeadLettersAsync(string queue, int maxCount, CancellationToken cancellationToken = default) =>
            inner.PeekDeadLettersAsync(queue, maxCount, cancellationToken);

        public override ValueTask<int> ReplayDeadLettersAsync(string queue, int maxCount, CancellationToken cancellationToken = default) =>
            inner.ReplayDeadLettersAsync(queue, maxCount, cancellationToken);

        public override ValueTask<int> PurgeDeadLettersAsync(string queue, CancellationToken cancellationToken = default) => inner.PurgeDeadLettersAsync(queue, cancellationToken);

        public override ValueTask DisposeAsync() => default;
    }
}
