namespace Patterns.EventSourcing;

public sealed partial class EventSourcingBuilder
{
    /// <summary>Registers the services every event-sourcing application shares; called once per service collection.</summary>
    internal void AddCoreServices()
    {
    }
}
