using System.Collections.Concurrent;
using System.Collections.Frozen;

namespace Patterns.Gateway;

/// <summary>
/// Live weights that override the <see cref="GatewayMetadata.Weight"/> of destinations without a configuration change:
/// the API behind a canary's 95/5 → 50/50 → 0/100 steps or a blue-green switch.
/// </summary>
/// <remarks>Thread-safe. A change applies to the next request. Weights set here win over configuration until <see cref="Reset"/>.</remarks>
public sealed class DestinationWeights
{
    private readonly ConcurrentDictionary<string, FrozenDictionary<string, int>> _overrides = new(StringComparer.OrdinalIgnoreCase);

    // Read on every request: ConcurrentDictionary.IsEmpty takes all of its locks when the dictionary is empty, the usual case.
    private volatile int _count;
    private readonly Lock _write = new();

    /// <summary>Raised after the weights of a cluster changed, with the cluster id.</summary>
    public event Action<string>? Changed;

    /// <summary>Sets the weights of a cluster's destinations at once. Destinations not named keep their configured weight.</summary>
    /// <param name="clusterId">The cluster.</param>
    /// <param name="weights">Destination id to weight (0 or more).</param>
    /// <exception cref="ArgumentOutOfRangeException">A weight is negative.</exception>
    public void Set(string clusterId, IReadOnlyDictionary<string, int> weights)
    {
        ArgumentException.ThrowIfNullOrEmpty(clusterId);
        ArgumentNullException.ThrowIfNull(weights);
        foreach (var (destination, weight) in weights)
        {
            if (weight < 0)
            {
                throw new ArgumentOutOfRangeException(nameof(weights), weight, $"The weight of destination '{destination}' in cluster '{clusterId}' must be 0 or more.");
            }
        }

        var frozen = weights.ToFrozenDictionary(StringComparer.OrdinalIgnoreCase);
        lock (_write)
        {
            _overrides[clusterId] = frozen;
            _count = _overrides.Count;
        }

        Changed?.Invoke(clusterId);
    }

    /// <summary>Drops the live weights of a cluster, so its configured weights apply again.</summary>
    /// <param name="clusterId">The cluster.</param>
    public void Reset(string clusterId)
    {
        bool removed;
        lock (_write)
        {
            removed = _overrides.TryRemove(clusterId, out _);
            _count = _overrides.Count;
        }

        if (removed)
        {
            Changed?.Invoke(clusterId);
        }
    }

    /// <summary>The live weights of a cluster, or an empty dictionary.</summary>
    /// <param name="clusterId">The cluster.</param>
    /// <returns>Destination id to weight.</returns>
    public IReadOnlyDictionary<string, int> Get(string clusterId) =>
        _overrides.TryGetValue(clusterId, out var weights) ? weights : FrozenDictionary<string, int>.Empty;

    internal FrozenDictionary<string, int>? For(string clusterId) => _count == 0 ? null : _overrides.GetValueOrDefault(clusterId);
}
