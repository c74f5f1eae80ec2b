using Patterns.EventSourcing;
using Patterns.EventSourcing.InMemory;
using Patterns.Storage;

namespace Patterns.Core.Tests.EventSourcing;

/// <summary>A unit's document changes without inline projections: applied in the unit's order, and only with the unit.</summary>
public sealed class InMemoryUnitOfWorkDocumentsTests
{
    [Fact]
    public async Task ChangesToOneDocumentWithinAUnit_TheLastOneWins()
    {
        var store = new InMemoryEventStorage();
        await store.UpsertAsync("docs", "b", "old"u8.ToArray());

        await store.CommitAsync(new UnitOfWork()
            .Append("s", ExpectedVersion.NoStream, [new SerializedEvent(Guid.NewGuid(), "e", "{}"u8.ToArray(), DateTimeOffset.UnixEpoch)])
            .Upsert("docs", "a", "1"u8.ToArray())
            .Delete("docs", "a")
            .Delete("docs", "b")
            .Upsert("docs", "b", "2"u8.ToArray())
            .Upsert("docs", "c", "3"u8.ToArray())
            .Upsert("docs", "c", "4"u8.ToArray()));

        (await store.GetAsync("docs", "a")).Should().BeNull();
        (await store.GetAsync("docs", "b")).Should().Equal("2"u8.ToArray());
        (await store.GetAsync("docs", "c")).Should().Equal("4"u8.ToArray());
    }

    [Fact]
    public async Task AUnitWhoseSingleAppendConflicts_ChangesNoDocument()
    {
        var store = new InMemoryEventStorage();
        await store.UpsertAsync("docs", "a", "old"u8.ToArray());

        var act = async () => await store.CommitAsync(new UnitOfWork()
            .Append("s", ExpectedVersion.Exact(3), [new SerializedEvent(Guid.NewGuid(), "e", "{}"u8.ToArray(), DateTimeOffset.UnixEpoch)])
            .Upsert("docs", "a", "new"u8.ToArray())
            .Upsert("docs", "b", "new"u8.ToArray()));

        await act.Should().ThrowAsync<WrongExpectedVersionException>();
        (await store.GetAsync("docs", "a")).Should().Equal("old"u8.ToArray());
        (await store.GetAsync("docs", "b")).Should().BeNull();
    }
}
