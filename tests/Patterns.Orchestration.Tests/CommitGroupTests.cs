using Patterns.EventSourcing.InMemory;
using Patterns.Orchestration.Runtime;
using Patterns.Storage;

namespace Patterns.Orchestration.Tests;

/// <summary>Group commit: units that wait while a commit runs go to the store as one; a conflict fails only its own unit.</summary>
public sealed class CommitGroupTests
{
    [Fact]
    public async Task UnitsWaitingForACommit_GoToTheStoreAsOne()
    {
        var store = new GatedStore(new InMemoryEventStorage());
        var group = new CommitGroup(store, 512);

        var first = group.CommitAsync(Append("a", ExpectedVersion.NoStream), CancellationToken.None);
        await store.Entered.WaitAsync(TestHost.Wait);
        var waiting = Enumerable.Range(0, 3).Select(i => group.CommitAsync(Append("b" + i, ExpectedVersion.NoStream), CancellationToken.None)).ToList();
        store.Release();
        await first.WaitAsync(TestHost.Wait);
        await Task.WhenAll(waiting).WaitAsync(TestHost.Wait);

        store.Commits.Should().Equal(1, 3);
        group.GroupedCommits.Should().Be(1);
    }

    [Fact]
    public async Task AConflictInAGroup_FailsOnlyItsOwnUnit()
    {
        var inner = new InMemoryEventStorage();
        await inner.CommitAsync(Append("taken", ExpectedVersion.NoStream));
        var store = new GatedStore(inner);
        var group = new CommitGroup(store, 512);

        var first = group.CommitAsync(Append("x", ExpectedVersion.NoStream), CancellationToken.None);
        await store.Entered.WaitAsync(TestHost.Wait);
        var good = group.CommitAsync(Append("y", ExpectedVersion.NoStream), CancellationToken.None);
        var conflict = group.CommitAsync(Append("taken", ExpectedVersion.NoStream), CancellationToken.None);
        var other = group.CommitAsync(Append("z", ExpectedVersion.NoStream), CancellationToken.None);
        store.Release();

        await Task.WhenAll(first, good, other).WaitAsync(TestHost.Wait);
        await conflict.Invoking(t => t.WaitAsync(TestHost.Wait)).Should().ThrowAsync<WrongExpectedVersionException>();
        store.Commits.Should().Equal(1, 3, 1, 1, 1);
        (await inner.GetStreamStateAsync("y")).Version.Should().Be(1);
        (await inner.GetStreamStateAsync("taken")).Version.Should().Be(1);
    }

    [Fact]
    public async Task AGroupThatLandedAndThenFailed_IsNotCommittedAgainUnitByUnit()
    {
        var inner = new InMemoryEventStorage();
        var store = new GatedStore(inner) { FailAfterCommit = 3 };
        var group = new CommitGroup(store, 512, landed: (work, ct) => LandedAsync(inner, work, ct));

        var first = group.CommitAsync(Append("x", ExpectedVersion.NoStream), CancellationToken.None);
        await store.Entered.WaitAsync(TestHost.Wait);
        var waiting = Enumerable.Range(0, 3).Select(i => group.CommitAsync(Append("y" + i, ExpectedVersion.NoStream).Enqueue(Message("y" + i)), CancellationToken.None)).ToList();
        store.Release();
        await Task.WhenAll(waiting.Append(first)).WaitAsync(TestHost.Wait);

        store.Commits.Should().Equal([1, 3], "committed again alone, each unit's append would be an idempotent retry and its outbox message stored twice");
        (await inner.ReadOutboxAsync(0, 10)).Select(m => m.Message.Destination).Should().Equal("y0", "y1", "y2");
    }

    [Fact]
    public async Task AConflictInAGroup_WhichTheLookFindsNotCommitted_FailsOnlyItsOwnUnit()
    {
        var inner = new InMemoryEventStorage();
        await inner.CommitAsync(Append("taken", ExpectedVersion.NoStream));
        var store = new GatedStore(inner);
        var group = new CommitGroup(store, 512, landed: (work, ct) => LandedAsync(inner, work, ct));

        var first = group.CommitAsync(Append("x", ExpectedVersion.NoStream), CancellationToken.None);
        await store.Entered.WaitAsync(TestHost.Wait);
        var good = group.CommitAsync(Append("y", ExpectedVersion.NoStream), CancellationToken.None);
        var conflict = group.CommitAsync(Append("taken", ExpectedVersion.NoStream), CancellationToken.None);
        store.Release();

        await Task.WhenAll(first, good).WaitAsync(TestHost.Wait);
        await conflict.Invoking(t => t.WaitAsync(TestHost.Wait)).Should().ThrowAsync<WrongExpectedVersionException>();
        store.Commits.Should().Equal(1, 2, 1, 1);
    }

    /// <summary>What the runtime's look does: the first append's first event, at the version it expected to follow.</summary>
    private static async ValueTask<bool> LandedAsync(InMemoryEventStorage store, UnitOfWork work, CancellationToken cancellationToken)
    {
        var append = work.Appends[0];
        await foreach (var stored in store.ReadStreamAsync(append.StreamId, ReadDirection.Forward, append.ExpectedVersion.Value + 1, 1, cancellationToken))
        {
            return stored.EventId == append.Events[0].EventId;
        }

        return false;
    }

    private static OutboxMessage Message(string destination) => new(destination, OutboxMessageKind.Send, new byte[] { 1 });

    private static UnitOfWork Append(string stream, ExpectedVersion expected) =>
        new UnitOfWork().Append(stream, expected, [new SerializedEvent(Guid.NewGuid(), "e", new byte[] { 1 }, DateTimeOffset.UnixEpoch)]);

    /// <summary>Holds the first commit until released, and records how many appends each commit carried.</summary>
    private sealed class GatedStore(IUnitOfWorkStorage inner) : IUnitOfWorkStorage
    {
        private readonly TaskCompletionSource _entered = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private readonly TaskCompletionSource _release = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public List<int> Commits { get; } = [];

        /// <summary>Gets or sets the number of appends of a commit that lands and then throws (once).</summary>
        public int FailAfterCommit { get; set; }

        public Task Entered => _entered.Task;

        public void Release() => _release.TrySetResult();

        public async ValueTask<UnitOfWorkResult> CommitAsync(UnitOfWork work, CancellationToken cancellationToken = default)
        {
            lock (Commits)
            {
                Commits.Add(work.Appends.Count);
            }

            _entered.TrySetResult();
            await _release.Task;
            var result = await inner.CommitAsync(work, cancellationToken);
            if (work.Appends.Count == FailAfterCommit)
            {
                FailAfterCommit = 0;
                throw new IOException("the connection was lost after the commit");
            }

            return result;
        }
    }
}
