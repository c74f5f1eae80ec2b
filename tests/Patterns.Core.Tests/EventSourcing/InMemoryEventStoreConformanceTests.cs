using System.Collections.Concurrent;
using Patterns.Conformance;
using Patterns.EventSourcing.InMemory;

namespace Patterns.Core.Tests.EventSourcing;

public sealed class InMemoryEventStoreConformanceTests : EventStoreConformanceTests
{
    // The in-memory store lives as long as the process, so "reopening" one hands back the same instance.
    private readonly ConcurrentDictionary<string, InMemoryEventStorage> _stores = new();

    protected override Task<EventStoreFixture> CreateStoreAsync(string name)
    {
        var store = new InMemoryEventStorage(new InMemoryEventStorageOptions { PageSize = 64 }, Clock);
        _stores[name] = store;
        return Task.FromResult(Fixture(store));
    }

    protected override Task<EventStoreFixture> ReopenAsync(string name) => Task.FromResult(Fixture(_stores[name]));

    private static EventStoreFixture Fixture(InMemoryEventStorage store) => EventStoreFixture.From(store);
}
