using System.Collections.Concurrent;
using FluentAssertions;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Patterns.EventSourcing;
using Patterns.EventSourcing.InMemory;
using Patterns.Messaging;
using Patterns.Outbox;
using Patterns.Storage;
using Xunit;

namespace Patterns.Core.Tests.Outbox;

[MessageName("outbox-tests.order-placed")]
public sealed record OutboxOrderPlaced(int OrderId, string Customer);

[MessageName("outbox-tests.order-opened")]
public sealed record OutboxOrderOpened(int OrderId);

public sealed class OutboxTests
{
    private static async Task<IHost> StartAsync(InMemoryEventStorage store, Action<HostApplicationBuilder> configure, Action<OutboxOptions>? outbox = null)
    {
        return await TestHost.StartAsync(b =>
        {
            b.AddEventSourcing(es => es.UseStorage(_ => store).AddEvent<OutboxOrderOpened>());
            b.AddOutbox(outbox);
            configure(b);
        }, harness: false);
    }

    private static async Task<UnitOfWorkResult> CommitAsync(IHost host, Action<IStoreSession> write)
    {
        await using var scope = host.Services.CreateAsyncScope();
        var session = scope.ServiceProvider.GetRequiredService<IStoreSession>();
        write(session);
        return await session.CommitAsync();
    }

    [Fact]
    public async Task Commit_AppendAndPublish_MessageArrivesAfterTheEventIsStored()
    {
        var store = new InMemoryEventStorage();
        var received = new TaskCompletionSource<(OutboxOrderPlaced Message, long Head)>(TaskCreationOptions.RunContinuationsAsynchronously);
        using var host = await StartAsync(store, b => b.AddPubSub(ps => ps.Subscribe<OutboxOrderPlaced>(async (m, _, ct) =>
            received.TrySetResult((m, await store.GetHeadPositionAsync(ct))), "orders.placed", o => o.ConsumerGroup = "billing")));

        var result = await CommitAsync(host, s =>
        {
            s.Append("order-7", ExpectedVersion.NoStream, [new EventData(new OutboxOrderOpened(7))]);
            s.Publish("orders.placed", new OutboxOrderPlaced(7, "ada"), new MessageOptions { PartitionKey = "order-7" });
        });
        var (message, head) = await received.Task.WaitAsync(TestHost.Wait);

        message.Should().Be(new OutboxOrderPlaced(7, "ada"));
        head.Should().Be(result.Appends[0].LastPosition, "the message was stored with the event and sent after their commit");
        await host.StopAsync();
    }

    [Fact]
    public async Task Commit_FailsOnAWrongExpectedVersion_PublishesNothing()
    {
        var store = new InMemoryEventStorage();
        var received = new ConcurrentQueue<int>();
        var marker = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var host = await StartAsync(store, b => b.AddPubSub(ps => ps.Subscribe<OutboxOrderPlaced>((m, _, _) =>
        {
            received.Enqueue(m.OrderId);
            if (m.OrderId == 2)
            {
                marker.TrySetResult();
            }

            return default;
        }, "orders.placed", o => o.ConsumerGroup = "billing")));
        await CommitAsync(host, s => s.Append("order-1", ExpectedVersion.NoStream, [new EventData(new OutboxOrderOpened(1))]));

        var act = () => CommitAsync(host, s =>
        {
            s.Append("order-1", ExpectedVersion.NoStream, [new EventData(new OutboxOrderOpened(1))]);
            s.Publish("orders.placed", new OutboxOrderPlaced(1, "rolled back"));
        });
        await act.Should().ThrowAsync<WrongExpectedVersionException>();
        await CommitAsync(host, s => s.Publish("orders.placed", new OutboxOrderPlaced(2, "committed")));
        await marker.Task.WaitAsync(TestHost.Wait);

        received.Should().Equal(2);
        await Eventually.HoldsAsync(() => store.ReadOutboxAsync(0, 10).AsTask().Result.Count == 0); // the relay removes what it handed over
        await host.StopAsync();
    }

    [Fact]
    public async Task Relay_MessagesWithOneKey_ArriveInCommitOrder()
    {
        var store = new InMemoryEventStorage();
        var received = new ConcurrentQueue<int>();
        var all = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        const int Count = 200;
        using var host = await StartAsync(store, b => b.AddPubSub(ps => ps.Subscribe<OutboxOrderPlaced>((m, _, _) =>
        {
            received.Enqueue(m.OrderId);
            if (received.Count == Count)
            {
                all.TrySetResult();
            }

            return default;
        }, "orders.placed", o => { o.ConsumerGroup = "billing"; o.Concurrency = 4; })), o => o.BatchSize = 16);

        for (var i = 0; i < Count; i++)
        {
            var n = i;
            await CommitAsync(host, s => s.Publish("orders.placed", new OutboxOrderPlaced(n, "c"), new MessageOptions { PartitionKey = "customer-1" }));
        }

        await all.Task.WaitAsync(TestHost.Wait);
        received.Should().Equal(Enumerable.Range(0, Count));
        await host.StopAsync();
    }

    [Fact]
    public async Task Relay_MessagesCommittedWhileNoRelayRuns_AreSentWhenOneStarts()
    {
        var store = new InMemoryEventStorage();
        using (var writer = await StartAsync(store, _ => { }, o => o.RunRelay = false))
        {
            await CommitAsync(writer, s => s.Send("emails", new OutboxOrderPlaced(1, "ada")));
            await CommitAsync(writer, s => s.Send("emails", new OutboxOrderPlaced(2, "bob")));
            await writer.StopAsync();
        }

        (await store.ReadOutboxAsync(0, 10)).Should().HaveCount(2);
        var received = new ConcurrentQueue<OutboxOrderPlaced>();
        var both = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var relay = await StartAsync(store, b => b.AddMessageQueue(q => q.AddQueue("emails").AddConsumer<OutboxOrderPlaced>("emails", (m, _, _) =>
        {
            received.Enqueue(m);
            if (received.Count == 2)
            {
                both.TrySetResult();
            }

            return default;
        })));

        await both.Task.WaitAsync(TestHost.Wait);
        received.Select(m => m.OrderId).Should().Equal(1, 2);
        await relay.StopAsync();
    }

    [Fact]
    public async Task Relay_TransportRefusesAMessage_MovesItToTheDeadLettersAndSendsTheRest()
    {
        var store = new InMemoryEventStorage();
        var received = new TaskCompletionSource<OutboxOrderPlaced>(TaskCreationOptions.RunContinuationsAsynchronously);
        using var host = await StartAsync(
            store,
            b => b.AddMessageQueue(q => q.AddQueue("emails").AddConsumer<OutboxOrderPlaced>("emails", (m, _, _) =>
            {
                received.TrySetResult(m);
                return default;
            })),
            o => { o.MaxAttempts = 1; o.RetryDelay = TimeSpan.FromMilliseconds(1); });

        await CommitAsync(host, s => s.Send("no-such-queue", new OutboxOrderPlaced(1, "lost?")));
        await CommitAsync(host, s => s.Send("emails", new OutboxOrderPlaced(2, "after")));

        (await received.Task.WaitAsync(TestHost.Wait)).OrderId.Should().Be(2);
        var deadLetters = new List<KeyValuePair<string, byte[]>>();
        await foreach (var entry in store.ListAsync("patterns.outbox-dead-letters"))
        {
            deadLetters.Add(entry);
        }

        deadLetters.Should().ContainSingle();
        System.Text.Encoding.UTF8.GetString(deadLetters[0].Value).Should().Contain("no-such-queue");
        await host.StopAsync();
    }

    [Fact]
    public async Task Session_HandledMessageClaimedTwice_SecondCommitIsADuplicateAndWritesNothing()
    {
        var store = new InMemoryEventStorage();
        var commits = new ConcurrentQueue<string>();
        var duplicates = 0;
        var done = new CountdownEvent(2);
        using var host = await StartAsync(store, b => b.AddMessageQueue(q => q.AddQueue("orders").AddConsumer<OutboxOrderPlaced>("orders", async (m, context, ct) =>
        {
            try
            {
                var session = context.Services.GetRequiredService<IStoreSession>();
                session.Handles(context);
                session.Store("orders", m.OrderId.ToString(System.Globalization.CultureInfo.InvariantCulture), m);
                await session.CommitAsync(ct);
                commits.Enqueue(context.MessageId.ToString());
            }
            catch (DuplicateMessageException)
            {
                Interlocked.Increment(ref duplicates);
            }
            finally
            {
                done.Signal();
            }
        })));
        var sender = host.Services.GetRequiredService<Patterns.Queues.IQueueSender>();
        var id = Guid.NewGuid();

        await sender.SendAsync("orders", new OutboxOrderPlaced(5, "ada"), new MessageOptions { MessageId = id });
        await sender.SendAsync("orders", new OutboxOrderPlaced(5, "ada again"), new MessageOptions { MessageId = id });
        done.Wait(TestHost.Wait).Should().BeTrue();

        commits.Should().ContainSingle();
        duplicates.Should().Be(1);
        (await host.Services.GetRequiredService<IReadModels>().GetAsync<OutboxOrderPlaced>("orders", "5"))!.Customer.Should().Be("ada");
        await host.StopAsync();
    }

    [Fact]
    public async Task Consumer_SecondCopyOfAStoreWritingHandlersMessage_HasNoEffectAndIsAcknowledged()
    {
        var store = new InMemoryEventStorage();
        var attempts = 0;
        var arrived = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var settled = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var followUps = new ConcurrentQueue<int>();
        var outcomes = new ConcurrentQueue<string>();
        using var host = await StartAsync(store, b =>
        {
            b.AddMessageQueue(q => q.AddQueue("orders").AddConsumer<OutboxOrderPlaced>("orders", async (m, context, ct) =>
            {
                var session = context.Services.GetRequiredService<IStoreSession>();
                session.Handles(context);
                session.Append($"order-{m.OrderId}", ExpectedVersion.Any, [new EventData(new OutboxOrderOpened(m.OrderId))]);
                session.Publish("orders.accepted", new OutboxOrderPlaced(m.OrderId, m.Customer));

                Interlocked.Increment(ref attempts);
                try
                {
                    await session.CommitAsync(ct);
                    outcomes.Enqueue("committed " + context.MessageId + " delivery " + context.DeliveryCount);
                }
                catch (Exception ex)
                {
                    outcomes.Enqueue(ex.GetType().Name + ": " + ex.Message);
                    throw;
                }
                finally
                {
                    if (Volatile.Read(ref attempts) >= 2)
                    {
                        settled.TrySetResult();
                    }
                }
            }, o => o.Concurrency = 2));
            b.AddPubSub(ps => ps.Subscribe<OutboxOrderPlaced>((m, _, _) =>
            {
                followUps.Enqueue(m.OrderId);
                arrived.TrySetResult();
                return default;
            }, "orders.accepted", o => o.ConsumerGroup = "shipping"));
        });
        var sender = host.Services.GetRequiredService<Patterns.Queues.IQueueSender>();
        var id = Guid.NewGuid();

        await sender.SendAsync("orders", new OutboxOrderPlaced(9, "ada"), new MessageOptions { MessageId = id, PartitionKey = "a" });
        await sender.SendAsync("orders", new OutboxOrderPlaced(9, "ada"), new MessageOptions { MessageId = id, PartitionKey = "b" });
        await settled.Task.WaitAsync(TestHost.Wait);
        (await Task.WhenAny(arrived.Task, Task.Delay(TestHost.Wait, TimeProvider.System))).Should().Be(arrived.Task, "the follow-up should arrive; the commits ended: " + string.Join(" | ", outcomes));
        await host.StopAsync();

        (await ToListAsync(store.ReadStreamAsync("order-9"))).Should().HaveCount(1, "the handler's append committed once");
        followUps.Should().Equal(9);
        (await host.Services.GetRequiredService<Patterns.Queues.IDeadLetterQueue>().PeekAsync("orders")).Should().BeEmpty("the duplicate was settled as handled, not failed");
        attempts.Should().Be(2, "a duplicate is not retried");
    }

    private static async Task<List<T>> ToListAsync<T>(IAsyncEnumerable<T> source)
    {
        var list = new List<T>();
        await foreach (var item in source)
        {
            list.Add(item);
        }

        return list;
    }

    [Fact]
    public async Task Start_StoreWithoutAnOutbox_FailsNamingWhatIsMissing()
    {
        var store = new PlainStore(new InMemoryEventStorage());
        using var host = TestHost.Build(b =>
        {
            b.AddEventSourcing(es => es.UseStorage(_ => store));
            b.AddOutbox(o => o.BatchSize = 0);
        }, harness: false);

        var act = () => host.StartAsync();

        var thrown = (await act.Should().ThrowAsync<Microsoft.Extensions.Options.OptionsValidationException>()).Which;
        thrown.Failures.Should().Contain(f => f.Contains("BatchSize", StringComparison.Ordinal))
            .And.Contain(f => f.Contains("IUnitOfWorkStorage", StringComparison.Ordinal))
            .And.Contain(f => f.Contains("IOutboxStore", StringComparison.Ordinal))
            .And.Contain(f => f.Contains("ILeaseStore", StringComparison.Ordinal));
    }

    /// <summary>A store with events, checkpoints, snapshots and documents only (as a third-party store may be).</summary>
    private sealed class PlainStore(InMemoryEventStorage inner) : IEventStorage, ICheckpointStore, ISnapshotStorage, IDocumentStorage
    {
        public EventStorageCapabilities Capabilities => inner.Capabilities;

        public ValueTask<AppendResult> AppendAsync(string streamId, ExpectedVersion expectedVersion, IReadOnlyList<SerializedEvent> events, InlineProjection? inlineProjection = null, CancellationToken cancellationToken = default) =>
            inner.AppendAsync(streamId, expectedVersion, events, inlineProjection, cancellationToken);

        public IAsyncEnumerable<StoredEvent> ReadStreamAsync(string streamId, ReadDirection direction = ReadDirection.Forward, long? fromVersion = null, long maxCount = long.MaxValue, CancellationToken cancellationToken = default) =>
            inner.ReadStreamAsync(streamId, direction, fromVersion, maxCount, cancellationToken);

        public IAsyncEnumerable<StoredEvent> ReadAllAsync(long afterPosition = 0, EventFilter? filter = null, long maxCount = long.MaxValue, CancellationToken cancellationToken = default) =>
            inner.ReadAllAsync(afterPosition, filter, maxCount, cancellationToken);

        public ValueTask<StreamState> GetStreamStateAsync(string streamId, CancellationToken cancellationToken = default) => inner.GetStreamStateAsync(streamId, cancellationToken);

        public ValueTask<long> GetHeadPositionAsync(CancellationToken cancellationToken = default) => inner.GetHeadPositionAsync(cancellationToken);

        public ValueTask DeleteStreamAsync(string streamId, ExpectedVersion expectedVersion, StreamDeleteMode mode = StreamDeleteMode.Soft, CancellationToken cancellationToken = default) =>
            inner.DeleteStreamAsync(streamId, expectedVersion, mode, cancellationToken);

        public ValueTask TruncateStreamAsync(string streamId, long beforeVersion, CancellationToken cancellationToken = default) => inner.TruncateStreamAsync(streamId, beforeVersion, cancellationToken);

        public ValueTask WaitForEventsAsync(long afterPosition, CancellationToken cancellationToken) => inner.WaitForEventsAsync(afterPosition, cancellationToken);

        public ValueTask<long?> LoadAsync(string name, CancellationToken cancellationToken = default) => ((ICheckpointStore)inner).LoadAsync(name, cancellationToken);

        public ValueTask SaveAsync(string name, long position, CancellationToken cancellationToken = default) => ((ICheckpointStore)inner).SaveAsync(name, position, cancellationToken);

        ValueTask<StoredSnapshot?> ISnapshotStorage.LoadAsync(string streamId, CancellationToken cancellationToken) => ((ISnapshotStorage)inner).LoadAsync(streamId, cancellationToken);

        public ValueTask SaveAsync(StoredSnapshot snapshot, CancellationToken cancellationToken = default) => ((ISnapshotStorage)inner).SaveAsync(snapshot, cancellationToken);

        public ValueTask<byte[]?> GetAsync(string collection, string id, CancellationToken cancellationToken = default) => inner.GetAsync(collection, id, cancellationToken);

        public ValueTask UpsertAsync(string collection, string id, ReadOnlyMemory<byte> document, CancellationToken cancellationToken = default) => inner.UpsertAsync(collection, id, document, cancellationToken);

        public ValueTask<bool> DeleteAsync(string collection, string id, CancellationToken cancellationToken = default) => inner.DeleteAsync(collection, id, cancellationToken);

        public IAsyncEnumerable<KeyValuePair<string, byte[]>> ListAsync(string collection, CancellationToken cancellationToken = default) => inner.ListAsync(collection, cancellationToken);

        public ValueTask ClearAsync(string collection, CancellationToken cancellationToken = default) => inner.ClearAsync(collection, cancellationToken);
    }
}
