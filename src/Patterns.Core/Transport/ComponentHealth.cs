using Microsoft.Extensions.Diagnostics.HealthChecks;

namespace Patterns.Transport;

/// <summary>The health of one part of a transport: a connection to a broker, or a consumer.</summary>
/// <param name="Name">What it is: a connection's purpose and endpoint, or a consumer group.</param>
/// <param name="Status">Healthy, or degraded when it cannot do its work now.</param>
/// <param name="Description">Why, in words an operator can act on.</param>
public readonly record struct ComponentHealth(string Name, HealthStatus Status, string Description)
{
    /// <summary>Creates a healthy report.</summary>
    /// <param name="name">What it is.</param>
    /// <param name="description">Its state.</param>
    /// <returns>The report.</returns>
    public static ComponentHealth Healthy(string name, string description) => new(name, HealthStatus.Healthy, description);

    /// <summary>Creates a degraded report.</summary>
    /// <param name="name">What it is.</param>
    /// <param name="description">What is wrong.</param>
    /// <returns>The report.</returns>
    public static ComponentHealth Degraded(string name, string description) => new(name, HealthStatus.Degraded, description);
}
