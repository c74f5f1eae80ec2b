using Patterns.Conformance;
using Patterns.Transport;

namespace Patterns.RabbitMq.Tests;

/// <summary>The transport conformance suite, unchanged, against a real broker.</summary>
public sealed class RabbitMqTransportConformanceTests : TransportConformanceTests, IAsyncLifetime, IAsyncDisposable
{
    private readonly string _clientName = $"patterns-conformance-{Guid.NewGuid():N}";
    private MessageTransport? _transport;

    protected override async ValueTask<MessageTransport> CreateTransportAsync()
    {
        await Broker.RequireAsync();
        _transport = Broker.Create(Broker.Options("conformance", o =>
        {
            o.MaxPayloadBytes = 256 * 1024;
            o.ClientName = _clientName;
        }));
        return _transport;
    }

    /// <summary>Closes this test's connections on the broker (by their unique name; other tests share the broker).</summary>
    protected override async Task<bool> LoseConnectionAsync()
    {
        (await Rabbitmqctl.CloseConnectionsNamedAsync(_clientName)).Should().BeGreaterThan(0, "the transport's connections are open");
        return true;
    }

    public new async ValueTask DisposeAsync()
    {
        await base.DisposeAsync();
        await Broker.DeleteTopologyAsync(_transport);
    }
}
