using System.Runtime.CompilerServices;
using Microsoft.AspNetCore.Http;
using Patterns.Gateway.Configuration;
using Yarp.ReverseProxy.LoadBalancing;
using Yarp.ReverseProxy.Model;

namespace Patterns.Gateway.LoadBalancing;

/// <summary>
/// Weighted destinations. Without a routing key, smooth weighted round robin: over any run of requests the split
/// matches the weights to within one request. With a routing key, weighted rendezvous hashing: a key always lands
/// on the same destination while the weights stay put, and a weight change moves only the keys it must.
/// </summary>
internal sealed class WeightedLoadBalancingPolicy(DestinationWeights weights) : ILoadBalancingPolicy
{
    private readonly ConditionalWeakTable<ClusterState, RoundRobinState> _state = new();

    public string Name => GatewayPolicies.Weighted;

    public DestinationState? PickDestination(HttpContext context, ClusterState cluster, IReadOnlyList<DestinationState> availableDestinations) =>
        Pick(context, cluster, availableDestinations, exclude: null);

    /// <summary>Picks a destination, never <paramref name="exclude"/> (the one that just failed), or null when none is left.</summary>
    public DestinationState? Pick(HttpContext context, ClusterState cluster, IReadOnlyList<DestinationState> available, DestinationState? exclude)
    {
        var count = available.Count;
        if (count == 0 || (count == 1 && ReferenceEquals(available[0], exclude)))
        {
            return null;
        }

        var overrides = weights.For(cluster.ClusterId);
        var policy = ClusterPolicy.For(cluster.Model.Config);
        var key = policy.RoutingKey?.Read(context);
        if (key is not null)
        {
            return Rendezvous(key, available, overrides, policy.Weights, exclude);
        }

        var state = _state.GetValue(cluster, static _ => new RoundRobinState());

        // The usual pick (YARP's, from the cluster's own list of available destinations, nothing excluded) follows the
        // precomputed schedule without a lock; a retry's or a hedge's pick, from another list or excluding one, takes the lock.
        return exclude is null && ReferenceEquals(available, cluster.DestinationsState.AvailableDestinations)
            ? state.Scheduled(available, overrides, policy.Weights)
            : state.Next(available, overrides, policy.Weights, exclude);
    }

    /// <summary>A destination's weight: the live one if set, else the configured one (parsed once per configuration), else 1.</summary>
    internal static int WeightOf(DestinationState destination, IReadOnlyDictionary<string, int>? overrides, IReadOnlyDictionary<string, int>? configured)
    {
        if (overrides is not null && overrides.TryGetValue(destination.DestinationId, out var live))
        {
            return live;
        }

        return configured is not null && configured.TryGetValue(destination.DestinationId, out var weight) ? weight : 1;
    }

    private static DestinationState? Rendezvous(
        string key, IReadOnlyList<DestinationState> available, IReadOnlyDictionary<string, int>? overrides, IReadOnlyDictionary<string, int>? configured, DestinationState? exclude)
    {
        DestinationState? best = null;
        var bestScore = double.NegativeInfinity;
        for (var i = 0; i < available.Count; i++)
        {
            var destination = available[i];
            var weight = WeightOf(destination, overrides, configured);
            if (weight == 0 || ReferenceEquals(destination, exclude))
            {
                continue;
            }

            // Score = -w / ln(u) with u uniform in (0, 1) from a hash of (key, destination): the highest score wins,
            // and each destination wins for a share of keys proportional to its weight.
            var hash = Hash(key, destination.DestinationId);
            var u = ((hash >> 11) + 0.5) / (1UL << 53);
            var score = -weight / Math.Log(u);
            if (score > bestScore)
            {
                bestScore = score;
                best = destination;
            }
        }

        return best;
    }

    private static ulong Hash(string key, string destination)
    {
        // FNV-1a over both strings, then the SplitMix64 finalizer so that keys differing in one character
        // still spread over the whole range.
        var h = 14695981039346656037UL;
        foreach (var c in key)
        {
            h = (h ^ c) * 1099511628211UL;
        }

        h = (h ^ 0xFFFF) * 1099511628211UL;
        foreach (var c in destination)
        {
            h = (h ^ c) * 1099511628211UL;
        }

        h ^= h >> 30;
        h *= 0xBF58476D1CE4E5B9UL;
        h ^= h >> 27;
        h *= 0x94D049BB133111EBUL;
        return h ^ (h >> 31);
    }

    /// <summary>Smooth weighted round robin (the nginx algorithm), one state per cluster.</summary>
    private sealed class RoundRobinState
    {
        /// <summary>The longest schedule kept (after dividing the weights by their greatest common divisor); a longer cycle picks under the lock.</summary>
        private const int MaxSchedule = 4096;

        private readonly Dictionary<string, long> _current = new(StringComparer.Ordinal);
        private readonly Lock _lock = new();
        private Schedule? _schedule;
        private long _position;
        private int _building;

        /// <summary>
        /// The next destination of the schedule for these destinations and weights: one whole cycle of smooth weighted round
        /// robin, computed once when the destinations or the weights change (a new list or dictionary from YARP or
        /// <see cref="DestinationWeights"/>), then followed by one interlocked step per pick. The same picks as <see cref="Next"/>
        /// from a fresh state, without a lock that every request of the cluster takes in turn.
        /// </summary>
        public DestinationState? Scheduled(IReadOnlyList<DestinationState> available, IReadOnlyDictionary<string, int>? overrides, IReadOnlyDictionary<string, int>? configured)
        {
            var schedule = Volatile.Read(ref _schedule);
            if (schedule is null || !schedule.For(available, overrides, configured))
            {
                // One thread computes the new cycle (up to MaxSchedule steps over every destination); the picks that come
                // meanwhile take the locked path instead of each computing the same cycle on a request thread.
                if (Interlocked.CompareExchange(ref _building, 1, 0) != 0)
                {
                    return Next(available, overrides, configured, exclude: null);
                }

                try
                {
                    schedule = Volatile.Read(ref _schedule);
                    if (schedule is null || !schedule.For(available, overrides, configured))
                    {
                        schedule = Schedule.Build(available, overrides, configured, MaxSchedule);
                        Volatile.Write(ref _schedule, schedule);
                    }
                }
                finally
                {
                    Volatile.Write(ref _building, 0);
                }
            }

            var order = schedule.Order;
            if (order is null)
            {
                return Next(available, overrides, configured, exclude: null);
            }

            return order.Length == 0 ? null : order[(ulong)(Interlocked.Increment(ref _position) - 1) % (ulong)order.Length];
        }

        public DestinationState? Next(
            IReadOnlyList<DestinationState> available, IReadOnlyDictionary<string, int>? overrides, IReadOnlyDictionary<string, int>? configured, DestinationState? exclude)
        {
            lock (_lock)
            {
                long total = 0;
                DestinationState? best = null;
                long bestCurrent = long.MinValue;
                for (var i = 0; i < available.Count; i++)
                {
                    var destination = available[i];
                    var weight = WeightOf(destination, overrides, configured);
                    if (weight == 0 || ReferenceEquals(destination, exclude))
                    {
                        continue;
                    }

                    ref var current = ref System.Runtime.InteropServices.CollectionsMarshal.GetValueRefOrAddDefault(_current, destination.DestinationId, out _);
                    current += weight;
                    total += weight;
                    if (current > bestCurrent)
                    {
                        bestCurrent = current;
                        best = destination;
                    }
                }

                if (best is not null)
                {
                    _current[best.DestinationId] -= total;
                }

                return best;
            }
        }
    }

    /// <summary>One cycle of smooth weighted round robin over a list of destinations under given weights.</summary>
    private sealed class Schedule
    {
        private readonly IReadOnlyList<DestinationState> _available;
        private readonly IReadOnlyDictionary<string, int>? _overrides;
        private readonly IReadOnlyDictionary<string, int>? _configured;

        private Schedule(IReadOnlyList<DestinationState> available, IReadOnlyDictionary<string, int>? overrides, IReadOnlyDictionary<string, int>? configured, DestinationState[]? order)
        {
            _available = available;
            _overrides = overrides;
            _configured = configured;
            Order = order;
        }

        /// <summary>Gets the picks of one cycle (empty when every weight is 0), or <see langword="null"/> when the cycle is too long to keep.</summary>
        public DestinationState[]? Order { get; }

        public bool For(IReadOnlyList<DestinationState> available, IReadOnlyDictionary<string, int>? overrides, IReadOnlyDictionary<string, int>? configured) =>
            ReferenceEquals(_available, available) && ReferenceEquals(_overrides, overrides) && ReferenceEquals(_configured, configured);

        public static Schedule Build(IReadOnlyList<DestinationState> available, IReadOnlyDictionary<string, int>? overrides, IReadOnlyDictionary<string, int>? configured, int max)
        {
            var weights = new long[available.Count];
            long gcd = 0;
            for (var i = 0; i < weights.Length; i++)
            {
                weights[i] = WeightOf(available[i], overrides, configured);
                gcd = Gcd(gcd, weights[i]);
            }

            long total = 0;
            for (var i = 0; i < weights.Length && gcd > 0; i++)
            {
                weights[i] /= gcd;
                total += weights[i];
            }

            if (total > max)
            {
                return new Schedule(available, overrides, configured, null);
            }

            // The nginx algorithm from zero: each pick adds every weight to its destination's current value, takes the highest
            // (the first on a tie) and takes the total off it. After one cycle every current value is back at zero.
            var order = new DestinationState[total];
            var current = new long[weights.Length];
            for (var step = 0; step < order.Length; step++)
            {
                var best = -1;
                for (var i = 0; i < weights.Length; i++)
                {
                    if (weights[i] == 0)
                    {
                        continue;
                    }

                    current[i] += weights[i];
                    if (best < 0 || current[i] > current[best])
                    {
                        best = i;
                    }
                }

                current[best] -= total;
                order[step] = available[best];
            }

            return new Schedule(available, overrides, configured, order);
        }

        private static long Gcd(long a, long b)
        {
            while (b != 0)
            {
                (a, b) = (b, a % b);
            }

            return a;
        }
    }
}
