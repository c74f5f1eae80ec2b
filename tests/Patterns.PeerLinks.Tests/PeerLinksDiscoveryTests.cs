using System.Collections.Concurrent;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Patterns.Messaging;
using Patterns.RequestResponse;
using Patterns.Transport;

namespace Patterns.PeerLinks.Tests;

/// <summary>Peers named as services and resolved through Microsoft.Extensions.ServiceDiscovery's configuration provider.</summary>
public sealed class PeerLinksDiscoveryTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(60);

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

    [Fact(Timeout = 120_000)]
    public async Task PeersAppearingAndDisappearingInServiceDiscovery_AreLinkedAndUnlinked_WhileRunning()
    {
        var ports = new[] { Mesh.FreePort(), Mesh.FreePort(), Mesh.FreePort() };
        await using var first = await PeerLinksTransport.StartAsync(Mesh.Options(1, ports, (_, o) => o.Peers.Clear()));
        await using var second = await PeerLinksTransport.StartAsync(Mesh.Options(2, ports, (_, o) => o.Peers.Clear()));
        var queue = $"discovery.refresh-{Guid.NewGuid():N}";
        var handledBy = new ConcurrentQueue<string>();
        foreach (var consumer in new[] { first, second })
        {
            await consumer.SubscribeAsync(
                new SubscriptionRequest { Address = TransportAddress.Queue(queue), ConsumerGroup = queue },
                (_, _) => { handledBy.Enqueue(consumer.NodeId); return new(Settlement.Ack); });
        }

        var services = new MutableConfiguration();
        services.Set(("Services:billing:http:0", $"127.0.0.1:{ports[1]}"));
        var logs = new ListLogs();
        var builder = Microsoft.Extensions.Hosting.Host.CreateApplicationBuilder();
        builder.Logging.AddProvider(logs);
        ((IConfigurationBuilder)builder.Configuration).Add(services);
        builder.Services.AddServiceDiscoveryCore();
        builder.Services.AddConfigurationServiceEndpointProvider();
        builder.AddPatterns(p => p.UsePeerLinks(o =>
        {
            Mesh.Apply(o, 0, ports, [new Uri("http://billing")]);
            o.DiscoveryRefreshInterval = TimeSpan.FromMilliseconds(50);
        }));
        using var host = builder.Build();
        await host.StartAsync();
        var membership = host.Services.GetRequiredService<PeerMembership>();
        var node = host.Services.GetRequiredService<PeerLinksTransport>();
        await membership.WaitForAllUpAsync().WaitAsync(Bound);
        membership.Peers.Select(p => p.NodeId).Should().Equal("node-1");

        // A second endpoint appears: it is linked while the node runs.
        services.Set(("Services:billing:http:0", $"127.0.0.1:{ports[1]}"), ("Services:billing:http:1", $"127.0.0.1:{ports[2]}"));
        await Mesh.UntilAsync(() => membership.Peers is { Count: 2 } peers && peers.All(p => p.State == PeerState.Up), "the new endpoint to be linked");
        membership.Peers.Select(p => p.NodeId).Should().BeEquivalentTo(["node-1", "node-2"]);

        // The first disappears: it is unlinked, with a last Down event, and leaves the membership.
        var gone = new TaskCompletionSource<PeerInfo>(TaskCreationOptions.RunContinuationsAsynchronously);
        membership.PeerChanged += (_, e) =>
        {
            if (e.Peer.NodeId == "node-1" && e.Peer.State == PeerState.Down)
            {
                gone.TrySetResult(e.Peer);
            }
        };
        services.Set(("Services:billing:http:0", $"127.0.0.1:{ports[2]}"));
        var down = await gone.Task.WaitAsync(Bound);

        down.Address.Should().Be(new Uri($"http://127.0.0.1:{ports[1]}"));
        down.Reason.Should().Be("no longer listed by service discovery");
        membership.Peers.Should().ContainSingle().Which.NodeId.Should().Be("node-2");

        // Messages now reach only the peer still listed.
        const int count = 10;
        for (var i = 0; i < count; i++)
        {
            await node.SendAsync(queue, new Envelope { MessageId = Guid.NewGuid(), MessageType = "discovery.message", Payload = new byte[] { (byte)i } });
        }

        await Mesh.UntilAsync(() => handledBy.Count >= count, $"{count} deliveries");
        handledBy.Should().HaveCount(count).And.OnlyContain(n => n == "node-2");

        // A lookup that finds nothing (a passing resolver failure) changes nothing: the healthy link stays.
        services.Set();
        await logs.WaitForAsync("a lookup failed or found no endpoint", Bound);
        membership.Peers.Should().ContainSingle().Which.Should().Match<PeerInfo>(p => p.NodeId == "node-2" && p.State == PeerState.Up);
        await node.SendAsync(queue, new Envelope { MessageId = Guid.NewGuid(), MessageType = "discovery.message", Payload = new byte[] { 1 } });
        await Mesh.UntilAsync(() => handledBy.Count > count, "a delivery after the failed lookup");
        handledBy.Should().OnlyContain(n => n == "node-2");
        await host.StopAsync();
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

/// <summary>Configuration whose entries a test replaces while the host runs, raising the reload a file change would.</summary>
internal sealed class MutableConfiguration : ConfigurationProvider, IConfigurationSource
{
    public IConfigurationProvider Build(IConfigurationBuilder builder) => this;

    public void Set(params (string Key, string Value)[] entries)
    {
        Data = entries.ToDictionary(e => e.Key, e => (string?)e.Value, StringComparer.OrdinalIgnoreCase);
        OnReload();
    }
}
