using Microsoft.Extensions.Diagnostics.HealthChecks;
using Patterns.Hosting;
using Patterns.Transport;

namespace Patterns.Health;

/// <summary>
/// Reports each connection of the configured transport: healthy while it can reach its broker, degraded while it cannot.
/// An in-process transport has no connection and is always healthy.
/// </summary>
/// <remarks>
/// Registered by <c>AddPatterns</c>; add it to the health checks with
/// <c>services.AddHealthChecks().AddCheck&lt;PatternsTransportHealthCheck&gt;("patterns-transport")</c>.
/// </remarks>
public sealed class PatternsTransportHealthCheck : IHealthCheck
{
    private readonly MessageTransport _transport;

    internal PatternsTransportHealthCheck(MessageTransport transport) => _transport = transport;

    /// <inheritdoc />
    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        var connections = _transport.GetConnectionHealth();
        return Task.FromResult(HealthReports.Combine(
            connections, $"{_transport.SystemName}: {(connections.Count == 0 ? "in-process, no connection to lose" : "every connection is open")}"));
    }
}

/// <summary>
/// Reports each consumer the host started (pub/sub subscriptions, queue consumers, request responders): degraded before the
/// host started, after it stopped, and while any consumer has stopped or lost its channel.
/// </summary>
/// <remarks>
/// Registered by <c>AddPatterns</c>; add it to the health checks with
/// <c>services.AddHealthChecks().AddCheck&lt;PatternsConsumersHealthCheck&gt;("patterns-consumers")</c>.
/// </remarks>
public sealed class PatternsConsumersHealthCheck : IHealthCheck
{
    private readonly MessagingHostedService _host;

    internal PatternsConsumersHealthCheck(MessagingHostedService host) => _host = host;

    /// <inheritdoc />
    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        var consumers = _host.GetConsumerHealth();
        return Task.FromResult(HealthReports.Combine(consumers, $"{consumers.Count} consumer(s) taking messages"));
    }
}

internal static class HealthReports
{
    /// <summary>Degraded when any part is, with every unhealthy part named in the description; each part's state in the data.</summary>
    public static HealthCheckResult Combine(IReadOnlyList<ComponentHealth> parts, string healthyDescription)
    {
        var data = new Dictionary<string, object>(parts.Count, StringComparer.Ordinal);
        List<string>? problems = null;
        foreach (var part in parts)
        {
            data[part.Name] = $"{part.Status}: {part.Description}";
            if (part.Status != HealthStatus.Healthy)
            {
                (problems ??= []).Add($"{part.Name}: {part.Description}");
            }
        }

        return problems is null
            ? HealthCheckResult.Healthy(healthyDescription, data)
            : HealthCheckResult.Degraded(string.Join("; ", problems), data: data);
    }
}
