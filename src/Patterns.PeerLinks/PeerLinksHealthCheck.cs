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

/// <summary>
/// Starts the node's listener and links with the host, and leaves the mesh when the host stops: in
/// <see cref="StoppedAsync"/>, after every hosted service's <c>StopAsync</c>, so the host's drain (its consumers
/// finishing or handing back what they hold, the request client's stop) has settled with the peers before the links
/// close. Leaving on the host's dispose only (as before) left a stopped node up for its peers.
/// </summary>
internal sealed class PeerLinksHostedService(PeerLinksTransport transport) : Microsoft.Extensions.Hosting.IHostedLifecycleService
{
    public Task StartingAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StartAsync(CancellationToken cancellationToken) => transport.StartAsync(cancellationToken);

    public Task StartedAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StoppingAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    /// <summary>Leaves, waiting no longer than the host's stop token allows (see <see cref="PeerLinksTransport.LeaveAsync"/>).</summary>
    public Task StoppedAsync(CancellationToken cancellationToken) => transport.LeaveAsync(cancellationToken);
}
