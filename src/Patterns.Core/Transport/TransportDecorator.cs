namespace Patterns.Transport;

/// <summary>
/// Wraps the transport when it is created, whichever transport was chosen and in whatever order (e.g. the test harness's
/// recording transport). Registered as a singleton; applied by <c>AddPatterns</c>'s default and by <c>UseTransport</c>.
/// </summary>
internal sealed class TransportDecorator(string name, Func<MessageTransport, IServiceProvider, MessageTransport> decorate)
{
    public string Name { get; } = name;

    public Func<MessageTransport, IServiceProvider, MessageTransport> Decorate { get; } = decorate;

    public static MessageTransport ApplyAll(MessageTransport transport, IServiceProvider services)
    {
        foreach (var decorator in (IEnumerable<TransportDecorator>?)services.GetService(typeof(IEnumerable<TransportDecorator>)) ?? [])
        {
            transport = decorator.Decorate(transport, services);
        }

        return transport;
    }
}
