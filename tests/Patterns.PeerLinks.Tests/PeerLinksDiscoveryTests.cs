using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Patterns.RequestResponse;

namespace Patterns.PeerLinks.Tests;

/// <summary>Peers named as services and resolved through Microsoft.Extensions.ServiceDiscovery's configuration provider.</summary>
public sealed class PeerLinksDiscoveryTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);

    [Fact(Timeout = 120_000)]
    public async Task PeersNamedAsServices_AreResolvedThroughServiceDiscovery_AndCarryRequests()
    {
        var ports = new[] { Mesh.FreePort(), Mesh.FreePort() };
        // "billing" as host:port, "orders" as a URI: the two forms the configuration provider reads.
        using var billing = Host(1, ports, "http://orders", ("Services:orders:http:0", $"http://127.0.0.1:{ports[0]}"), withHandler: true, logs: null);
        using var orders = Host(0, ports, "http://billing", ("Services:billing:http:0", $"127.0.0.1:{ports[1]}"), withHandler: false, logs: null);
        await billing.StartAsync();
        await orders.StartAsync();
        var membership = orders.Services.GetRequiredService<PeerMembership>();
        await membership.WaitForAllUpAsync().WaitAsync(Bound);
        await billing.Services.GetRequiredService<PeerMembership>().WaitForAllUpAsync().WaitAsync(Bound);

        var peer = membership.Peers.Should().ContainSingle().Which;
        peer.Address.Should().Be(new Uri($"http://127.0.0.1:{ports[1]}"));
        peer.NodeId.Should().Be("node-1");
        billing.Services.GetRequiredService<PeerMembership>().Peers.Single().Address.Should().Be(new Uri($"http://127.0.0.1:{ports[0]}"));
        var answer = await orders.Services.GetRequiredService<IRequestClient>().SendAsync<Square, Squared>(new Square(12)).AsTask().WaitAsync(Bound);
        answer.Value.Should().Be(144);

        await orders.StopAsync();
        await billing.StopAsync();
    }

    [Fact(Timeout = 120_000)]
    public async Task PeerNoProviderKnows_IsDialledAsWritten_WithAWarning()
    {
        var ports = new[] { Mesh.FreePort(), Mesh.FreePort() };
        var logs = new ListLogs();
        using var other = Host(1, ports, $"http://127.0.0.1:{ports[0]}", ("Services:unused:http:0", "127.0.0.1:1"), withHandler: false, logs: null);
        using var node = Host(0, ports, $"http://127.0.0.1:{ports[1]}", ("Services:unused:http:0", "127.0.0.1:1"), withHandler: false, logs: logs);
        await other.StartAsync();
        await node.StartAsync();

        await node.Services.GetRequiredService<PeerMembership>().WaitForAllUpAsync().WaitAsync(Bound);

        node.Services.GetRequiredService<PeerMembership>().Peers.Single().Address.Should().Be(new Uri($"http://127.0.0.1:{ports[1]}"));
        (await logs.WaitForAsync("could not be resolved through service discovery", Bound)).Should().Contain($"http://127.0.0.1:{ports[1]}").And.Contain("dialling it as written");
        await node.StopAsync();
        await other.StopAsync();
    }

    private static IHost Host(int index, int[] ports, string peer, (string Key, string Value) discovery, bool withHandler, ListLogs? logs)
    {
        var builder = Microsoft.Extensions.Hosting.Host.CreateApplicationBuilder();
        builder.Configuration.AddInMemoryCollection([new KeyValuePair<string, string?>(discovery.Key, discovery.Value)]);
        if (logs is not null)
        {
            builder.Logging.AddProvider(logs);
        }

        builder.Services.AddServiceDiscoveryCore();
        builder.Services.AddConfigurationServiceEndpointProvider();
        builder.AddPatterns(p => p.UsePeerLinks(o => Mesh.Apply(o, index, ports, [new Uri(peer)])));
        builder.AddRequestResponse(r =>
        {
            if (withHandler)
            {
                r.AddHandler<Square, Squared, SquareHandler>();
            }
        });
        return builder.Build();
    }
}
