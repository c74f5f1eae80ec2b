using Microsoft.Extensions.Diagnostics.HealthChecks;

namespace Patterns.PeerLinks;

/// <summary>Healthy when every configured peer is up, degraded when some are, unhealthy when none is.</summary>
internal sealed class PeerLinksHealthCheck(PeerLinksTransport transport) : IHealthCheck
{
    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        var peers = transport.Membership.Peers;
        var up = peers.Count(p => p.State == PeerState.Up);
        var data = peers.ToDictionary(p => p.Address.ToString(), p => (object)$"{p.State}{(p.Reason is null ? string.Empty : $": {p.Reason}")}");
        var description = $"{up} of {peers.Count} peers up (node {transport.NodeId}).";
        var result = peers.Count == 0 || up == peers.Count ? HealthCheckResult.Healthy(description, data)
            : up > 0 ? HealthCheckResult.Degraded(description, data: data)
            : HealthCheckResult.Unhealthy(description, data: data);
        return Task.FromResult(result);
    }
}

/// <summary>Starts the node's listener and links with the host, and stops them with it.</summary>
internal sealed class PeerLinksHostedService(PeerLinksTransport transport) : Microsoft.Extensions.Hosting.IHostedService
{
    public Task StartAsync(CancellationToken cancellationToken) => transport.StartAsync(cancellationToken);

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}
