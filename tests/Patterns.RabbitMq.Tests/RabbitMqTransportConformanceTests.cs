using Patterns.Conformance;
using Patterns.Transport;

namespace Patterns.RabbitMq.Tests;

/// <summary>The transport conformance suite, unchanged, against a real broker.</summary>
public sealed class RabbitMqTransportConformanceTests : TransportConformanceTests, IAsyncLifetime, IAsyncDisposable
{
    private MessageTransport? _transport;

    protected override async ValueTask<MessageTransport> CreateTransportAsync()
    {
        await Broker.RequireAsync();
        _transport = Broker.Create(Broker.Options("conformance", o => o.MaxPayloadBytes = 256 * 1024));
        return _transport;
    }

    public new async ValueTask DisposeAsync()
    {
        await base.DisposeAsync();
        await Broker.DeleteTopologyAsync(_transport);
    }
}
