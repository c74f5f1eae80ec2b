using System.Collections.Concurrent;
using Patterns.Storage;

namespace Patterns.Postgres.Tests;

/// <summary>
/// The global log under concurrent writers: a reader that tails <see cref="PostgresEventStore.ReadAllAsync"/> from
/// the last position it saw must see every event exactly once, in increasing position order, even though
/// transactions commit in an order of their own.
/// </summary>
public sealed class GapFreeReadingTests : PostgresTestBase
{
    private const int Writers = 16;
    private const int AppendsPerWriter = 40;

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task ReadAllAsync_SixteenWritersAndATailingReader_SeesEveryEventOnceInPositionOrder(bool inlineProjection)
    {
        var store = CreateSut(o => o.PageSize = 25);
        await store.MigrateAsync();
        using var timeout = new CancellationTokenSource(PostgresDatabase.Wait);
        var token = timeout.Token;
        var appended = new ConcurrentDictionary<Guid, long>();
        InlineProjection? projection = inlineProjection
            ? async (events, documents, ct) =>
            {
                // Several statements inside the append's transaction, so it commits well after it took its positions.
                var id = events[0].StreamId;
                var current = await documents.GetAsync("counts", id, ct);
                await documents.UpsertAsync("counts", id, BitConverter.GetBytes((current is null ? 0 : BitConverter.ToInt32(current)) + events.Count), ct);
            }
            : null;

        var writers = Enumerable.Range(0, Writers).Select(w => Task.Run(async () =>
        {
            for (var i = 0; i < AppendsPerWriter; i++)
            {
                var batch = TestEvents.Many(1 + (i % 4));
                var result = await store.AppendAsync($"writer{w}-{i % 3}", ExpectedVersion.Any, batch, projection, token);
                for (var k = 0; k < batch.Length; k++)
                {
                    appended[batch[k].EventId] = result.FirstPosition + k;
                }
            }
        })).ToArray();
        var allWritten = Task.WhenAll(writers);

        var seen = new List<StoredEvent>();
        var reads = 0;
        var last = 0L;
        while (true)
        {
            var finished = allWritten.IsCompleted;
            var head = await store.GetHeadPositionAsync(token);
            await foreach (var e in store.ReadAllAsync(last, cancellationToken: token))
            {
                e.Position.Should().BeGreaterThan(last, "positions are strictly increasing");
                seen.Add(e);
                last = e.Position;
            }

            reads++;
            last.Should().BeGreaterThanOrEqualTo(head, "every position up to the head is readable once the head reports it");
            if (finished)
            {
                break;
            }
        }

        await allWritten;
        appended.Should().HaveCount(Writers * AppendsPerWriter * 10 / 4);
        seen.Select(e => e.EventId).Should().OnlyHaveUniqueItems();
        seen.Count.Should().Be(appended.Count, "a tailing reader that skipped a late-committing lower position would miss events");
        seen.Should().OnlyContain(e => appended[e.EventId] == e.Position);
        reads.Should().BeGreaterThan(1, "the reader tailed the log while the writers ran");
    }

    [Fact]
    public async Task WaitForEventsAsync_SubscriberLoop_SeesEveryEventOnceWhileWritersRun()
    {
        // The loop a subscription runs: read after the checkpoint, then wait for the next append signal.
        var store = CreateSut(o => o.PageSize = 10);
        await store.MigrateAsync();
        using var timeout = new CancellationTokenSource(PostgresDatabase.Wait);
        var token = timeout.Token;
        const int Total = Writers * 20;

        var writers = Enumerable.Range(0, Writers).Select(w => Task.Run(async () =>
        {
            for (var i = 0; i < 20; i++)
            {
                await store.AppendAsync($"w{w}", ExpectedVersion.Any, [TestEvents.One()], cancellationToken: token);
            }
        })).ToArray();

        var allWritten = Task.WhenAll(writers);
        var positions = new List<long>();
        var checkpoint = 0L;
        while (true)
        {
            var finished = allWritten.IsCompleted;
            await foreach (var e in store.ReadAllAsync(checkpoint, cancellationToken: token))
            {
                positions.Add(e.Position);
                checkpoint = e.Position;
            }

            if (finished)
            {
                break;
            }

            await store.WaitForEventsAsync(checkpoint, token);
        }

        await allWritten;
        positions.Count.Should().Be(Total);
        positions.Should().BeInAscendingOrder().And.OnlyHaveUniqueItems();
    }
    [Fact]
    public async Task CommitAsync_UnitsFromSeveralStoresAndATailingReader_PositionsGapFreeAndEveryEventSeenOnceInOrder()
    {
        // Several store instances stand for several processes (each its own pool and group queue). Each writer commits
        // units of work: a single append (the one-statement path), and two appends with a document (the general path,
        // both streams in one commit_units call), so transactions that append race for positions from every side.
        const int Stores = 4;
        const int UnitsPerWriter = 30;
        var stores = Enumerable.Range(0, Stores).Select(_ => CreateSut(o => o.PageSize = 20)).ToArray();
        await stores[0].MigrateAsync();
        using var timeout = new CancellationTokenSource(PostgresDatabase.Wait);
        var token = timeout.Token;
        var appended = new ConcurrentDictionary<Guid, long>();

        var writers = Enumerable.Range(0, Stores * 2).Select(w => Task.Run(async () =>
        {
            var store = stores[w % Stores];
            for (var i = 0; i < UnitsPerWriter; i++)
            {
                var first = TestEvents.Many(1 + (i % 3));
                var work = new UnitOfWork().Append($"u{w}-{i % 4}", ExpectedVersion.Any, first);
                SerializedEvent[] second = [];
                if (i % 2 == 1)
                {
                    second = TestEvents.Many(2);
                    work.Append($"v{w}-{i % 5}", ExpectedVersion.Any, second).Upsert("docs", $"{w}-{i}", new byte[] { 1 });
                }

                var result = await store.CommitAsync(work, token);
                for (var k = 0; k < first.Length; k++)
                {
                    appended[first[k].EventId] = result.Appends[0].FirstPosition + k;
                }

                for (var k = 0; k < second.Length; k++)
                {
                    appended[second[k].EventId] = result.Appends[1].FirstPosition + k;
                }
            }
        })).ToArray();
        var allWritten = Task.WhenAll(writers);

        var reader = stores[0];
        var seen = new List<StoredEvent>();
        var last = 0L;
        while (true)
        {
            var finished = allWritten.IsCompleted;
            await foreach (var e in reader.ReadAllAsync(last, cancellationToken: token))
            {
                e.Position.Should().Be(last + 1, "positions are gap-free and a reader never sees a higher one before a lower one commits");
                seen.Add(e);
                last = e.Position;
            }

            if (finished)
            {
                break;
            }

            await reader.WaitForEventsAsync(last, token);
        }

        await allWritten;
        seen.Count.Should().Be(appended.Count, "a tailing reader that skipped a late-committing lower position would miss events");
        seen.Should().OnlyContain(e => appended[e.EventId] == e.Position);
        foreach (var stream in seen.GroupBy(e => e.StreamId))
        {
            stream.Select(e => e.Version).Should().Equal(Enumerable.Range(1, stream.Count()).Select(v => (long)v), "each stream's versions follow its commits");
        }
    }
}
