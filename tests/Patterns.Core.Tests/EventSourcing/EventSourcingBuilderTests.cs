using Microsoft.Extensions.DependencyInjection;
using Patterns.Conformance;
using Patterns.EventSourcing.InMemory;
using Patterns.Storage;

namespace Patterns.Core.Tests.EventSourcing;

public sealed class EventSourcingBuilderTests
{
    [Fact]
    public void AddEventSourcing_NoStoreChosen_UsesOneInMemoryStoreForEveryInterface()
    {
        var services = new ServiceCollection();
        services.AddEventSourcing();
        using var provider = services.BuildServiceProvider();

        var events = provider.GetRequiredService<IEventStorage>();
        events.Should().BeOfType<InMemoryEventStorage>();
        provider.GetRequiredService<ICheckpointStore>().Should().BeSameAs(events);
        provider.GetRequiredService<ISnapshotStorage>().Should().BeSameAs(events);
        provider.GetRequiredService<IDocumentStorage>().Should().BeSameAs(events);
        provider.GetRequiredService<IInboxStore>().Should().BeSameAs(events);
    }

    [Fact]
    public void UseStorage_PluginStore_ReplacesTheDefaultEvenWhenAddEventSourcingIsCalledAgain()
    {
        var custom = new InMemoryEventStorage();
        var services = new ServiceCollection();
        services.AddEventSourcing(es => es.UseStorage(_ => custom));
        services.AddEventSourcing();
        using var provider = services.BuildServiceProvider();

        provider.GetRequiredService<IEventStorage>().Should().BeSameAs(custom);
        provider.GetRequiredService<ICheckpointStore>().Should().BeSameAs(custom);
        provider.GetRequiredService<ISnapshotStorage>().Should().BeSameAs(custom);
        provider.GetRequiredService<IDocumentStorage>().Should().BeSameAs(custom);
        provider.GetRequiredService<IInboxStore>().Should().BeSameAs(custom);
        services.Count(d => d.ServiceType == typeof(IEventStorage)).Should().Be(1);
    }

    [Fact]
    public void UseStorage_StoreWithoutInbox_RemovesTheDefaultInbox()
    {
        var services = new ServiceCollection();
        services.AddEventSourcing(es => es.UseStorage(_ => EventStoreFixture.From(new InMemoryEventStorage()).AsSingleStore()));
        using var provider = services.BuildServiceProvider();

        provider.GetRequiredService<IEventStorage>().Should().BeOfType<EventStoreFixtureStorage>();
        provider.GetService<IInboxStore>().Should().BeNull("an inbox in memory beside a durable store would silently lose entries");
    }
}
