using System.Text;
using FluentAssertions;
using Microsoft.Extensions.Time.Testing;
using Patterns.Storage;
using Xunit;

namespace Patterns.Conformance;

/// <summary>
/// The unit of work, the outbox and leases: every part of a unit commits or none does, on every store, with the same
/// exceptions, and concurrent units each keep their own outcome.
/// </summary>
public abstract partial class EventStoreConformanceTests
{
    private static readonly TimeSpan LeaseTime = TimeSpan.FromSeconds(30);

    /// <summary>
    /// Gets the clock the stores under test must use (pass it as their <see cref="TimeProvider"/>): the lease tests move
    /// it to expire leases instead of waiting.
    /// </summary>
    protected FakeTimeProvider Clock { get; } = new(new DateTimeOffset(2026, 1, 2, 3, 4, 5, TimeSpan.Zero));

    private static ReadOnlyMemory<byte> Utf8(string text) => Encoding.UTF8.GetBytes(text);

    private static OutboxMessage Message(string destination, string body, string? key = null) =>
        new(destination, OutboxMessageKind.Publish, Utf8(body)) { PartitionKey = key };

    private static IUnitOfWorkStorage Units(EventStoreFixture store) =>
        store.UnitOfWork ?? throw new InvalidOperationException("The store does not implement IUnitOfWorkStorage, which every store must.");

    private static IOutboxStore Outbox(EventStoreFixture store) =>
        store.Outbox ?? throw new InvalidOperationException("The store does not implement IOutboxStore, which every store must.");

    private static ILeaseStore Leases(EventStoreFixture store) =>
        store.Leases ?? throw new InvalidOperationException("The store does not implement ILeaseStore, which every store must.");

    private async Task<string?> Document(EventStoreFixture store, string collection, string id) =>
        await store.Documents.GetAsync(collection, id, Timeout) is { } bytes ? Encoding.UTF8.GetString(bytes) : null;

    [Fact]
    public async Task UnitOfWork_CommitsEveryKindOfWriteTogether()
    {
        var store = await OpenAsync();
        await store.Documents.UpsertAsync("docs", "gone", Utf8("{\"old\":true}"), Timeout);
        var work = new UnitOfWork()
            .Append("uow-a", ExpectedVersion.NoStream, NewEvents(2))
            .Append("uow-b", ExpectedVersion.Any, NewEvents(1))
            .Upsert("docs", "kept", Utf8("{\"n\":1}"))
            .Delete("docs", "gone")
            .SaveCheckpoint("proj", 3)
            .ClaimInbox("consumer", "m-1")
            .Enqueue(Message("orders", "first", "k"))
            .Enqueue(Message("orders", "second", "k"));

        var result = await Units(store).CommitAsync(work, Timeout);

        result.Appends.Should().HaveCount(2);
        result.Appends[0].Should().Be(new AppendResult("uow-a", 2, 1, 2));
        result.Appends[1].Should().Be(new AppendResult("uow-b", 1, 3, 3));
        result.LastOutboxSequence.Should().BeGreaterThan(0);
        (await ReadAll(store)).Select(e => (e.StreamId, e.Version, e.Position)).Should().Equal(("uow-a", 1L, 1L), ("uow-a", 2L, 2L), ("uow-b", 1L, 3L));
        (await Document(store, "docs", "kept")).Should().Be("{\"n\":1}");
        (await Document(store, "docs", "gone")).Should().BeNull();
        (await store.Checkpoints.LoadAsync("proj", Timeout)).Should().Be(3);
        if (store.Inbox is { } inbox)
        {
            (await inbox.ContainsAsync("consumer", "m-1", Timeout)).Should().BeTrue();
        }

        var outbox = await Outbox(store).ReadOutboxAsync(0, 10, Timeout);
        outbox.Select(m => Encoding.UTF8.GetString(m.Message.Payload.Span)).Should().Equal("first", "second");
        outbox[1].Sequence.Should().Be(result.LastOutboxSequence).And.BeGreaterThan(outbox[0].Sequence);
        outbox.Should().OnlyContain(m => m.Message.Destination == "orders" && m.Message.Kind == OutboxMessageKind.Publish && m.Message.PartitionKey == "k");
    }

    [Fact]
    public async Task UnitOfWork_WrongExpectedVersion_CommitsNothing()
    {
        var store = await OpenAsync();
        await store.Events.AppendAsync("taken", ExpectedVersion.NoStream, NewEvents(1), null, Timeout);
        var work = new UnitOfWork()
            .Append("fresh", ExpectedVersion.NoStream, NewEvents(1))
            .Upsert("docs", "d", Utf8("{}"))
            .SaveCheckpoint("proj", 9)
            .ClaimInbox("consumer", "m-1")
            .Enqueue(Message("orders", "never"))
            .Append("taken", ExpectedVersion.NoStream, NewEvents(1));

        var act = async () => await Units(store).CommitAsync(work, Timeout);

        (await act.Should().ThrowAsync<WrongExpectedVersionException>()).Which.StreamId.Should().Be("taken");
        await ShouldHoldNothingOfTheFailedUnitAsync(store);
        await Units(store).CommitAsync(new UnitOfWork().ClaimInbox("consumer", "m-1"), Timeout); // not recorded by the failed unit
    }

    [Fact]
    public async Task UnitOfWork_InboxEntryAlreadyRecorded_ThrowsDuplicateMessageAndCommitsNothing()
    {
        var store = await OpenAsync();
        await Units(store).CommitAsync(new UnitOfWork().ClaimInbox("consumer", "m-1"), Timeout);
        var work = new UnitOfWork()
            .Append("fresh", ExpectedVersion.NoStream, NewEvents(1))
            .Upsert("docs", "d", Utf8("{}"))
            .SaveCheckpoint("proj", 9)
            .Enqueue(Message("orders", "never"))
            .ClaimInbox("consumer", "m-1");

        var act = async () => await Units(store).CommitAsync(work, Timeout);

        var thrown = (await act.Should().ThrowAsync<DuplicateMessageException>()).Which;
        thrown.Consumer.Should().Be("consumer");
        thrown.MessageId.Should().Be("m-1");
        await ShouldHoldNothingOfTheFailedUnitAsync(store);
        (await Units(store).CommitAsync(new UnitOfWork().ClaimInbox("other-consumer", "m-1"), Timeout)).Should().NotBeNull("inbox entries are per consumer");
    }

    [Fact]
    public async Task UnitOfWork_InboxClaimOfAMessageMarkedThroughTheInboxStore_IsADuplicate()
    {
        var store = await OpenAsync();
        if (store.Inbox is not { } inbox)
        {
            return;
        }

        (await inbox.TryMarkHandledAsync("consumer", "m-7", Timeout)).Should().BeTrue();

        var act = async () => await Units(store).CommitAsync(new UnitOfWork().ClaimInbox("consumer", "m-7").Upsert("docs", "d", Utf8("{}")), Timeout);

        await act.Should().ThrowAsync<DuplicateMessageException>();
        (await Document(store, "docs", "d")).Should().BeNull();
    }

    [Fact]
    public async Task UnitOfWork_CheckpointMovedByAnotherWriter_ThrowsCheckpointConflictAndCommitsNothing()
    {
        var store = await OpenAsync();
        await Units(store).CommitAsync(new UnitOfWork().SaveCheckpoint("proj", 5, expectedPosition: 0), Timeout);
        await Units(store).CommitAsync(new UnitOfWork().SaveCheckpoint("proj", 8, expectedPosition: 5), Timeout);
        var work = new UnitOfWork()
            .Append("fresh", ExpectedVersion.NoStream, NewEvents(1))
            .Upsert("docs", "d", Utf8("{}"))
            .Enqueue(Message("orders", "never"))
            .SaveCheckpoint("proj", 7, expectedPosition: 5);

        var act = async () => await Units(store).CommitAsync(work, Timeout);

        var thrown = (await act.Should().ThrowAsync<CheckpointConflictException>()).Which;
        (thrown.Name, thrown.Expected, thrown.Actual).Should().Be(("proj", 5L, 8L));
        (await store.Checkpoints.LoadAsync("proj", Timeout)).Should().Be(8, "a writer that lost its place never moves a checkpoint back");
        (await ReadAll(store)).Should().BeEmpty();
        (await Document(store, "docs", "d")).Should().BeNull();
        (await Outbox(store).ReadOutboxAsync(0, 10, Timeout)).Should().BeEmpty();
    }

    [Fact]
    public async Task UnitOfWork_FailingInlineProjection_CommitsNothing()
    {
        var store = await OpenAsync();
        InlineProjection failing = static (_, _, _) => throw new InvalidOperationException("projection failed");
        var work = new UnitOfWork()
            .Upsert("docs", "d", Utf8("{}"))
            .Enqueue(Message("orders", "never"))
            .Append("fresh", ExpectedVersion.NoStream, NewEvents(1), failing);

        var act = async () => await Units(store).CommitAsync(work, Timeout);

        await act.Should().ThrowAsync<InvalidOperationException>().WithMessage("projection failed");
        (await ReadAll(store)).Should().BeEmpty();
        (await Document(store, "docs", "d")).Should().BeNull();
        (await Outbox(store).ReadOutboxAsync(0, 10, Timeout)).Should().BeEmpty();
    }

    [Fact]
    public async Task UnitOfWork_InlineProjectionSeesTheUnitsDocumentsAndCommitsItsOwn()
    {
        var store = await OpenAsync();
        InlineProjection count = static async (appended, documents, ct) =>
        {
            var before = await documents.GetAsync("counts", "c", ct);
            var n = before is null ? 0 : int.Parse(Encoding.UTF8.GetString(before), System.Globalization.CultureInfo.InvariantCulture);
            await documents.UpsertAsync("counts", "c", Encoding.UTF8.GetBytes((n + appended.Count).ToString(System.Globalization.CultureInfo.InvariantCulture)), ct);
        };
        var work = new UnitOfWork()
            .Upsert("counts", "c", Utf8("10"))
            .Append("s1", ExpectedVersion.NoStream, NewEvents(2), count)
            .Append("s2", ExpectedVersion.NoStream, NewEvents(3), count);

        await Units(store).CommitAsync(work, Timeout);

        (await Document(store, "counts", "c")).Should().Be("15");
    }

    [Fact]
    public async Task UnitOfWork_TwoAppendsToOneStream_TheSecondSeesTheFirst()
    {
        var store = await OpenAsync();
        var work = new UnitOfWork()
            .Append("one", ExpectedVersion.NoStream, NewEvents(2))
            .Append("one", ExpectedVersion.Exact(2), NewEvents(1));

        var result = await Units(store).CommitAsync(work, Timeout);

        result.Appends.Select(a => a.Version).Should().Equal(2, 3);
        (await ReadStream(store, "one")).Select(e => e.Version).Should().Equal(1, 2, 3);
        ShouldBeGapFreeFromOne(await ReadAll(store));
    }

    [Fact]
    public async Task UnitOfWork_ExactRetryOfAnAppend_ReturnsTheOriginalAndCommitsTheRest()
    {
        var store = await OpenAsync();
        var events = NewEvents(2);
        var first = await store.Events.AppendAsync("retried", ExpectedVersion.NoStream, events, null, Timeout);

        var result = await Units(store).CommitAsync(new UnitOfWork().Append("retried", ExpectedVersion.NoStream, events).Upsert("docs", "d", Utf8("{}")), Timeout);

        result.Appends[0].Should().Be(first);
        (await ReadStream(store, "retried")).Should().HaveCount(2);
        (await Document(store, "docs", "d")).Should().Be("{}");
    }

    [Fact]
    public async Task UnitOfWork_EmptyUnit_CommitsAndReturnsEmpty()
    {
        var store = await OpenAsync();

        var result = await Units(store).CommitAsync(new UnitOfWork(), Timeout);

        result.Appends.Should().BeEmpty();
        result.LastOutboxSequence.Should().Be(0);
    }

    [Fact]
    public async Task UnitOfWork_ConcurrentUnits_EachKeepsItsOwnOutcome()
    {
        var store = await OpenAsync();
        await store.Events.AppendAsync("contended", ExpectedVersion.NoStream, NewEvents(1), null, Timeout);
        const int Units_ = 32;
        var tasks = Enumerable.Range(0, Units_).Select(i => Task.Run(async () =>
        {
            // Even units append to their own stream and succeed; odd ones also expect 'contended' at version 0, which it
            // is not, so they fail alone and leave nothing behind.
            var work = new UnitOfWork()
                .Append($"own-{i}", ExpectedVersion.NoStream, NewEvents(2))
                .Upsert("docs", $"d-{i}", Utf8("{}"))
                .Enqueue(Message("q", $"m-{i}"));
            if (i % 2 == 1)
            {
                work.Append("contended", ExpectedVersion.Exact(0), NewEvents(1));
            }

            try
            {
                await Units(store).CommitAsync(work, Timeout);
                return true;
            }
            catch (WrongExpectedVersionException)
            {
                return false;
            }
        })).ToArray();

        var outcomes = await Task.WhenAll(tasks);

        outcomes.Select((ok, i) => ok == (i % 2 == 0)).Should().AllBeEquivalentTo(true);
        var log = await ReadAll(store);
        ShouldBeGapFreeFromOne(log);
        log.Select(e => e.StreamId).Distinct().Should().BeEquivalentTo(Enumerable.Range(0, Units_).Where(i => i % 2 == 0).Select(i => $"own-{i}").Append("contended"));
        var outbox = await Outbox(store).ReadOutboxAsync(0, 1000, Timeout);
        outbox.Select(m => Encoding.UTF8.GetString(m.Message.Payload.Span)).Should().BeEquivalentTo(Enumerable.Range(0, Units_).Where(i => i % 2 == 0).Select(i => $"m-{i}"));
        outbox.Select(m => m.Sequence).Should().BeInAscendingOrder().And.OnlyHaveUniqueItems();
        for (var i = 0; i < Units_; i++)
        {
            (await Document(store, "docs", $"d-{i}")).Should().Be(i % 2 == 0 ? "{}" : null);
        }
    }

    [Fact]
    public async Task UnitOfWork_ConcurrentCopiesOfOneMessage_OnlyOneCommits()
    {
        var store = await OpenAsync();
        const int Copies = 8;
        var tasks = Enumerable.Range(0, Copies).Select(i => Task.Run(async () =>
        {
            try
            {
                await Units(store).CommitAsync(new UnitOfWork().ClaimInbox("handler", "same-id").Append("effects", ExpectedVersion.Any, NewEvents(1)), Timeout);
                return true;
            }
            catch (DuplicateMessageException)
            {
                return false;
            }
        })).ToArray();

        var outcomes = await Task.WhenAll(tasks);

        outcomes.Count(ok => ok).Should().Be(1);
        (await ReadStream(store, "effects")).Should().HaveCount(1, "the handler's writes commit exactly once");
    }

    [Fact]
    public async Task Outbox_ReadsInSequenceOrderAndDeletesThroughASequence()
    {
        var store = await OpenAsync();
        for (var i = 0; i < 5; i++)
        {
            await Units(store).CommitAsync(new UnitOfWork().Enqueue(Message("q", $"m-{i}") with { Kind = OutboxMessageKind.Send }), Timeout);
        }

        var all = await Outbox(store).ReadOutboxAsync(0, 100, Timeout);
        all.Select(m => Encoding.UTF8.GetString(m.Message.Payload.Span)).Should().Equal("m-0", "m-1", "m-2", "m-3", "m-4");
        all.Should().OnlyContain(m => m.Message.Kind == OutboxMessageKind.Send && m.Message.PartitionKey == null);
        (await Outbox(store).ReadOutboxAsync(all[1].Sequence, 2, Timeout)).Select(m => m.Sequence).Should().Equal(all[2].Sequence, all[3].Sequence);

        (await Outbox(store).DeleteOutboxAsync(all[2].Sequence, null, Timeout)).Should().Be(3);

        (await Outbox(store).ReadOutboxAsync(0, 100, Timeout)).Select(m => m.Sequence).Should().Equal(all[3].Sequence, all[4].Sequence);
        (await Outbox(store).DeleteOutboxAsync(all[2].Sequence, null, Timeout)).Should().Be(0);
    }

    [Fact]
    public async Task Outbox_DeletesARangeAfterAnEarlierRemoval_AndWithALeaseOnlyWhileItIsHeld()
    {
        var store = await OpenAsync();
        var sequences = new List<long>();
        for (var i = 0; i < 6; i++)
        {
            sequences.Add((await Units(store).CommitAsync(new UnitOfWork().Enqueue(Message("q", $"m-{i}")), Timeout)).LastOutboxSequence);
        }

        (await Outbox(store).DeleteOutboxRangeAsync(0, sequences[1], null, Timeout)).Should().Be(2);
        (await Outbox(store).DeleteOutboxRangeAsync(sequences[1], sequences[3], null, Timeout)).Should().Be(2);
        (await Outbox(store).ReadOutboxAsync(0, 100, Timeout)).Select(m => m.Sequence).Should().Equal(sequences[4], sequences[5]);

        var lease = (await Leases(store).TryAcquireLeaseAsync("range-relay", "a", TimeSpan.FromMinutes(1), Timeout))!;
        var stale = lease with { Token = lease.Token + 1 };
        var refused = async () => await Outbox(store).DeleteOutboxRangeAsync(sequences[3], sequences[5], stale, Timeout);
        await refused.Should().ThrowAsync<LeaseLostException>();
        (await Outbox(store).ReadOutboxAsync(0, 100, Timeout)).Should().HaveCount(2, "a removal under a lease not held removes nothing");

        (await Outbox(store).DeleteOutboxRangeAsync(sequences[3], sequences[5], lease, Timeout)).Should().Be(2);
        (await Outbox(store).ReadOutboxAsync(0, 100, Timeout)).Should().BeEmpty();
    }

    [Fact]
    public async Task Outbox_SequenceNumbersAreNeverReusedAfterADelete()
    {
        var store = await OpenAsync();
        var first = await Units(store).CommitAsync(new UnitOfWork().Enqueue(Message("q", "a")), Timeout);
        await Outbox(store).DeleteOutboxAsync(first.LastOutboxSequence, null, Timeout);

        var second = await Units(store).CommitAsync(new UnitOfWork().Enqueue(Message("q", "b")), Timeout);

        second.LastOutboxSequence.Should().BeGreaterThan(first.LastOutboxSequence);
    }

    [Fact]
    public async Task Outbox_WaitCompletesWhenAMessageIsCommitted()
    {
        var store = await OpenAsync();
        var wait = Outbox(store).WaitForOutboxAsync(0, Timeout).AsTask();

        await Units(store).CommitAsync(new UnitOfWork().Enqueue(Message("q", "a")), Timeout);

        await wait;
        (await Outbox(store).ReadOutboxAsync(0, 10, Timeout)).Should().HaveCount(1);
    }

    [Fact]
    public async Task Outbox_SurvivesAReopen()
    {
        var name = NewName();
        var store = Track(await CreateStoreAsync(name));
        await Units(store).CommitAsync(new UnitOfWork().Enqueue(Message("q", "kept", "key-1")).SaveCheckpoint("proj", 4), Timeout);
        await store.DisposeAsync();

        var reopened = Track(await ReopenAsync(name));

        var outbox = await Outbox(reopened).ReadOutboxAsync(0, 10, Timeout);
        if (ReferenceEquals(reopened.Events, store.Events) || outbox.Count > 0)
        {
            outbox.Should().ContainSingle().Which.Message.PartitionKey.Should().Be("key-1");
            (await reopened.Checkpoints.LoadAsync("proj", Timeout)).Should().Be(4);
        }
    }

    [Fact]
    public async Task Lease_IsHeldByOneOwnerUntilItExpiresThenTakenOverWithAGreaterToken()
    {
        var store = await OpenAsync();
        var leases = Leases(store);

        var first = await leases.TryAcquireLeaseAsync("relay", "process-a", LeaseTime, Timeout);
        first.Should().NotBeNull();
        first!.Owner.Should().Be("process-a");
        first.ExpiresAt.Should().Be(Clock.GetUtcNow() + LeaseTime);
        (await leases.TryAcquireLeaseAsync("relay", "process-b", LeaseTime, Timeout)).Should().BeNull("process-a holds the lease");
        (await leases.TryAcquireLeaseAsync("other", "process-b", LeaseTime, Timeout)).Should().NotBeNull("leases are per name");

        var again = await leases.TryAcquireLeaseAsync("relay", "process-a", LeaseTime, Timeout);
        again!.Token.Should().Be(first.Token, "re-acquiring a lease one holds renews it");

        Clock.Advance(LeaseTime + TimeSpan.FromSeconds(1));
        var taken = await leases.TryAcquireLeaseAsync("relay", "process-b", LeaseTime, Timeout);

        taken.Should().NotBeNull("the lease expired");
        taken!.Token.Should().BeGreaterThan(first.Token);
        (await leases.RenewLeaseAsync(first, LeaseTime, Timeout)).Should().BeNull("process-a lost the lease");
    }

    [Fact]
    public async Task Lease_RenewalExtendsItAndKeepsTheToken()
    {
        var store = await OpenAsync();
        var leases = Leases(store);
        var lease = await leases.TryAcquireLeaseAsync("relay", "process-a", LeaseTime, Timeout);

        Clock.Advance(LeaseTime / 2);
        var renewed = await leases.RenewLeaseAsync(lease!, LeaseTime, Timeout);
        Clock.Advance(LeaseTime * 3 / 4);

        renewed!.Token.Should().Be(lease!.Token);
        renewed.ExpiresAt.Should().Be(lease.ExpiresAt + LeaseTime / 2);
        (await leases.TryAcquireLeaseAsync("relay", "process-b", LeaseTime, Timeout)).Should().BeNull("the renewal has not expired");
    }

    [Fact]
    public async Task Lease_ReleasedLeaseIsTakenAtOnceWithAGreaterToken()
    {
        var store = await OpenAsync();
        var leases = Leases(store);
        var lease = await leases.TryAcquireLeaseAsync("relay", "process-a", LeaseTime, Timeout);

        await leases.ReleaseLeaseAsync(lease!, Timeout);
        var next = await leases.TryAcquireLeaseAsync("relay", "process-b", LeaseTime, Timeout);

        next!.Token.Should().BeGreaterThan(lease!.Token);
        await leases.ReleaseLeaseAsync(lease, Timeout);
        (await leases.TryAcquireLeaseAsync("relay", "process-a", LeaseTime, Timeout)).Should().BeNull("releasing a lease no longer held does nothing");
    }

    [Fact]
    public async Task Lease_FencedOffOwnerCannotCommitOrDeleteFromTheOutbox()
    {
        var store = await OpenAsync();
        var leases = Leases(store);
        var stale = await leases.TryAcquireLeaseAsync("proj", "process-a", LeaseTime, Timeout);
        await Units(store).CommitAsync(new UnitOfWork().RequireLease(stale!).SaveCheckpoint("proj", 3).Enqueue(Message("q", "a")), Timeout);
        Clock.Advance(LeaseTime * 2);
        var current = await leases.TryAcquireLeaseAsync("proj", "process-b", LeaseTime, Timeout);
        await Units(store).CommitAsync(new UnitOfWork().RequireLease(current!).SaveCheckpoint("proj", 10), Timeout);

        var commit = async () => await Units(store).CommitAsync(new UnitOfWork().RequireLease(stale!).SaveCheckpoint("proj", 5).Upsert("docs", "d", Utf8("{}")), Timeout);
        var delete = async () => await Outbox(store).DeleteOutboxAsync(long.MaxValue, stale, Timeout);

        var thrown = (await commit.Should().ThrowAsync<LeaseLostException>()).Which;
        thrown.CurrentOwner.Should().Be("process-b");
        thrown.Lease.Should().Be(stale);
        await delete.Should().ThrowAsync<LeaseLostException>();
        (await store.Checkpoints.LoadAsync("proj", Timeout)).Should().Be(10);
        (await Document(store, "docs", "d")).Should().BeNull();
        (await Outbox(store).ReadOutboxAsync(0, 10, Timeout)).Should().HaveCount(1);
        (await Outbox(store).DeleteOutboxAsync(long.MaxValue, current, Timeout)).Should().Be(1);
    }

    [Fact]
    public async Task Lease_InvalidArguments_AreRejected()
    {
        var store = await OpenAsync();
        var leases = Leases(store);

        await FluentActions.Awaiting(async () => await leases.TryAcquireLeaseAsync("", "a", LeaseTime, Timeout)).Should().ThrowAsync<ArgumentException>();
        await FluentActions.Awaiting(async () => await leases.TryAcquireLeaseAsync("n", "", LeaseTime, Timeout)).Should().ThrowAsync<ArgumentException>();
        await FluentActions.Awaiting(async () => await leases.TryAcquireLeaseAsync("n", "a", TimeSpan.Zero, Timeout)).Should().ThrowAsync<ArgumentOutOfRangeException>();
    }

    private async Task ShouldHoldNothingOfTheFailedUnitAsync(EventStoreFixture store)
    {
        (await ReadStream(store, "fresh")).Should().BeEmpty();
        (await Document(store, "docs", "d")).Should().BeNull();
        (await store.Checkpoints.LoadAsync("proj", Timeout)).Should().NotBe(9);
        (await Outbox(store).ReadOutboxAsync(0, 10, Timeout)).Should().BeEmpty();
    }
}
