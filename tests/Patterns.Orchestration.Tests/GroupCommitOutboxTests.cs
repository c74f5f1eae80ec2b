using System.Collections.Concurrent;
using Microsoft.Extensions.DependencyInjection;
using Patterns.InMemory;
using Patterns.Messaging;
using Patterns.Storage;
using Patterns.Transport;

namespace Patterns.Orchestration.Tests;

/// <summary>
/// Activity tasks over a transport that is not in-process go through the outbox, in the workflow task's unit of work. A
/// group of units that the store committed and then reported an error for is committed again unit by unit; each append is
/// then an idempotent retry, and the rest of such a unit still commits (the store contract), so its outbox messages would
/// be stored a second time. Each activity task must be sent, and run, once.
/// </summary>
public sealed class GroupCommitOutboxTests
{
    private static readonly string[] Grouped = ["a0", "a1", "a2"];

    [Fact]
    public async Task AGroupCommitThatLandedButReportedAnError_SendsEachActivityTaskOnce()
    {
        GroupLandThenThrowStore? store = null;
        CountingTransport? transport = null;
        await using var host = await TestHost.StartAsync(
            WorkflowEngineTests.All,
            services: s => s.AddSingleton<IUnitOfWorkStorage>(sp => store = new GroupLandThenThrowStore((IUnitOfWorkStorage)sp.GetRequiredService<IEventStorage>())),
            transport: sp => transport = new CountingTransport(InMemoryTransport.Create(timeProvider: sp.GetRequiredService<TimeProvider>())));
        host.Runtime.DirectDispatch.Should().BeFalse("activity tasks go through the outbox on a transport that is not in-process");
        var queued = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        host.Runtime.Group.Queued += waiting =>
        {
            if (waiting >= Grouped.Length)
            {
                queued.TrySetResult();
            }
        };

        // The gate instance's first commit is held; the other instances' first workflow tasks queue behind it and go to
        // the store as one group, which lands and then reports an error.
        var gate = host.Client.StartAsync(nameof(SequenceWorkflow), "gate", "gate");
        await store!.Held.WaitAsync(TestHost.Wait);
        var starts = Grouped.Select(id => host.Client.StartAsync(nameof(SequenceWorkflow), id, id)).ToList();
        await queued.Task.WaitAsync(TestHost.Wait);
        store.Release();
        await gate.WaitAsync(TestHost.Wait);
        await Task.WhenAll(starts).WaitAsync(TestHost.Wait);

        string[] all = ["gate", .. Grouped];
        foreach (var id in all)
        {
            (await host.ResultAsync<string>(id)).Should().Be($"echo-{id}-1,echo-{id}-2,echo-{id}-3");
        }

        store.Injected.Should().Be(1, "the group of the three first workflow tasks landed and then reported an error");

        // A unit's outbox messages are sent in sequence order, and each instance's later activity tasks were committed
        // after its first one, so by its completion any second copy of its first task was sent too.
        var sent = transport!.Sent(host.Runtime.Options.ActivityQueue);
        sent.Should().HaveCount(all.Length * 3, "each activity task is sent once").And.OnlyHaveUniqueItems();
        foreach (var id in all)
        {
            for (var i = 1; i <= 3; i++)
            {
                host.Log.Count($"Echo:{id}-{i}").Should().Be(1, $"activity {i} of {id} runs once");
            }
        }
    }

    /// <summary>Holds the gate instance's first commit until released; commits the first group of units, then throws (once).</summary>
    private sealed class GroupLandThenThrowStore(IUnitOfWorkStorage inner) : IUnitOfWorkStorage
    {
        private readonly TaskCompletionSource _held = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private readonly TaskCompletionSource _release = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private int _holding;
        private int _injected;

        public Task Held => _held.Task;

        public int Injected => Volatile.Read(ref _injected);

        public bool NumbersOutboxConsecutively => inner.NumbersOutboxConsecutively;

        public void Release() => _release.TrySetResult();

        public async ValueTask<UnitOfWorkResult> CommitAsync(UnitOfWork work, CancellationToken cancellationToken = default)
        {
            if (work.Appends.Any(a => a.StreamId.EndsWith("gate", StringComparison.Ordinal)) && Interlocked.Exchange(ref _holding, 1) == 0)
            {
                _held.TrySetResult();
                await _release.Task.WaitAsync(TestHost.Wait, cancellationToken);
            }

            var result = await inner.CommitAsync(work, cancellationToken);
            if (work.Appends.Count > 1 && Interlocked.CompareExchange(ref _injected, 1, 0) == 0)
            {
                throw new IOException("the connection was lost after the commit");
            }

            return result;
        }
    }

    /// <summary>A transport that crosses a process boundary, as far as the engine can tell; records the message ids sent to each queue.</summary>
    private sealed class CountingTransport(MessageTransport inner) : MessageTransport
    {
        private readonly ConcurrentQueue<(string Queue, Guid MessageId)> _sent = new();

        public override string SystemName => "out-of-process";

        public override bool IsInProcess => false;

        public override int MaxPayloadBytes => inner.MaxPayloadBytes;

        public IReadOnlyList<Guid> Sent(string queue) => [.. _sent.Where(s => s.Queue == queue).Select(s => s.MessageId)];

        public override ValueTask DeclareQueueAsync(string queue, QueueSettings settings, CancellationToken cancellationToken = default) =>
            inner.DeclareQueueAsync(queue, settings, cancellationToken);

        public override ValueTask SendAsync(string queue, Envelope envelope, CancellationToken cancellationToken = default)
        {
            _sent.Enqueue((queue, envelope.MessageId));
            return inner.SendAsync(queue, envelope, cancellationToken);
        }

        public override ValueTask<bool> PublishAsync(string topic, Envelope envelope, CancellationToken cancellationToken = default) =>
            inner.PublishAsync(topic, envelope, cancellationToken);

        public override ValueTask<TransportSubscription> SubscribeAsync(SubscriptionRequest request, DeliveryHandler handler, CancellationToken cancellationToken = default) =>
            inner.SubscribeAsync(request, handler, cancellationToken);

        public override ValueTask<IReadOnlyList<DeadLetterMessage>> PeekDeadLettersAsync(string queue, int maxCount, CancellationToken cancellationToken = default) =>
            inner.PeekDeadLettersAsync(queue, maxCount, cancellationToken);

        public override ValueTask<int> ReplayDeadLettersAsync(string queue, int maxCount, CancellationToken cancellationToken = default) =>
            inner.ReplayDeadLettersAsync(queue, maxCount, cancellationToken);

        public override ValueTask<int> PurgeDeadLettersAsync(string queue, CancellationToken cancellationToken = default) =>
            inner.PurgeDeadLettersAsync(queue, cancellationToken);

        public override ValueTask DisposeAsync() => inner.DisposeAsync();
    }
}
