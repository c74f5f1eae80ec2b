using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Hosting;
using Patterns.Messaging;
using Patterns.RequestResponse;
using Patterns.Transport;

namespace Patterns.PeerLinks.Tests;

/// <summary>Request-response between two hosts that chose peer links with one line, and the health check.</summary>
public sealed class PeerLinksHostingTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(60);

    [Fact(Timeout = 180_000)]
    public async Task Request_HandledOnPeer_RepliesAcrossTheLink_AndFailsFastWhenNoNodeHostsIt()
    {
        var ports = new[] { Mesh.FreePort(), Mesh.FreePort() };
        using var server = Host(ports, 1, withHandler: true);
        using var client = Host(ports, 0, withHandler: false);
        await server.StartAsync();
        await client.StartAsync();
        await client.Services.GetRequiredService<PeerMembership>().WaitForAllUpAsync().WaitAsync(Bound);
        await server.Services.GetRequiredService<PeerMembership>().WaitForAllUpAsync().WaitAsync(Bound);
        var requests = client.Services.GetRequiredService<IRequestClient>();

        var answers = await Task.WhenAll(Enumerable.Range(1, 64).Select(i => requests.SendAsync<Square, Squared>(new Square(i)).AsTask()));

        answers.Select(a => a.Value).Should().Equal(Enumerable.Range(1, 64).Select(i => i * i));
        var health = await client.Services.GetRequiredService<HealthCheckService>().CheckHealthAsync();
        health.Entries["peer-links"].Status.Should().Be(HealthStatus.Healthy);

        await server.StopAsync();
        server.Dispose();
        var down = client.Services.GetRequiredService<PeerMembership>();
        await Mesh.UntilAsync(() => down.Peers.Single().State == PeerState.Down, "the stopped peer to be down");

        var act = async () => await requests.SendAsync<Square, Squared>(new Square(3));
        // The handler's node is down, not gone for good: unavailable (a gateway answers 503), not "no handler" (404).
        (await act.Should().ThrowAsync<TransportUnavailableException>()).Which.Message.Should().Contain("tests.square").And.Contain("cannot be reached");
        (await client.Services.GetRequiredService<HealthCheckService>().CheckHealthAsync()).Entries["peer-links"].Status.Should().Be(HealthStatus.Unhealthy);
        await client.StopAsync();
    }

    private static IHost Host(int[] ports, int index, bool withHandler)
    {
        var builder = Microsoft.Extensions.Hosting.Host.CreateApplicationBuilder();
        builder.AddPatterns(p => p.UsePeerLinks(o => Mesh.Apply(o, index, ports)));
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

[MessageName("tests.square")]
public sealed record Square(int Value);

[MessageName("tests.squared")]
public sealed record Squared(int Value);

public sealed class SquareHandler : IRequestHandler<Square, Squared>
{
    public ValueTask<Squared> HandleAsync(Square request, CancellationToken cancellationToken) => new(new Squared(request.Value * request.Value));
}
