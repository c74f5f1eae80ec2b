using System.Runtime.CompilerServices;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using Patterns.Gateway.Configuration;
using Patterns.Gateway.Resilience;
using Patterns.Gateway.Telemetry;
using Yarp.ReverseProxy.Forwarder;
using Yarp.ReverseProxy.Health;
using Yarp.ReverseProxy.Model;

namespace Patterns.Gateway.Health;

/// <summary>
/// Counts each attempt's outcome per destination and ejects outliers through YARP's passive health state, which
/// YARP itself re-admits when the ejection time has passed.
/// </summary>
internal sealed partial class OutlierDetector(IDestinationHealthUpdater healthUpdater, TimeProvider timeProvider, ILogger<OutlierDetector> logger)
{
    private readonly ConditionalWeakTable<DestinationState, Counters> _counters = new();

    /// <summary>
    /// From the route's transformer, as YARP hands it the response (or <see langword="null"/> after a failure): counts the one
    /// attempt of a request whose policy has no resilience, so such a request needs neither the resilience handler's
    /// context handoff nor an async layer around its send. A request with resilience is counted attempt by attempt by the
    /// handler instead. Counted as the handler would: a 5xx or a failure to get a response is a failure, unless the client
    /// aborted the request or its body failed on the client's side (<see cref="IsClientBodyFault"/>); a request that failed
    /// before it was sent (a request transform threw) is not counted.
    /// </summary>
    public void RecordResponse(HttpContext context, HttpResponseMessage? response, ResiliencePolicyRegistry registry)
    {
        if (context.Features.Get<IReverseProxyFeature>() is not { ProxiedDestination: { } destination, Cluster: not null } feature
            || feature.Route.Cluster is not { } cluster
            || ClusterPolicy.For(cluster.Model.Config).Outlier is null
            || ClusterPolicy.Effective(feature, registry, context).HasResilience)
        {
            return;
        }

        if (response is not null)
        {
            Record(cluster, destination, (int)response.StatusCode >= 500);
        }
        else if (!context.RequestAborted.IsCancellationRequested
            && context.Features.Get<IForwarderErrorFeature>()?.Error is not (
                ForwarderError.RequestCreation or ForwarderError.RequestBodyClient or ForwarderError.RequestBodyCanceled or ForwarderError.None or null))
        {
            Record(cluster, destination, failure: true);
        }
    }

    /// <summary>
    /// True when <paramref name="exception"/> comes from reading the client's request body, refused by the gateway's own server
    /// (larger than the route allows, too slow, malformed): the client's fault, which says nothing about the destination.
    /// </summary>
    public static bool IsClientBodyFault(Exception? exception)
    {
        for (var e = exception; e is not null; e = e.InnerException)
        {
            if (e is BadHttpRequestException)
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>Records one attempt on <paramref name="destination"/>; a failure is a 5xx, a timeout or a transport error.</summary>
    public void Record(ClusterState cluster, DestinationState destination, bool failure)
    {
        var settings = ClusterPolicy.For(cluster.Model.Config).Outlier;
        if (settings is null)
        {
            return;
        }

        var counters = _counters.GetValue(destination, static _ => new Counters());
        if (!failure && settings.FailureRate is null)
        {
            // Consecutive failures only: a success just ends a run of failures. Without a run there is nothing to write, so the
            // usual request neither takes the lock nor dirties the counters' cache line for the other cores.
            counters.Succeeded();
            return;
        }

        var now = timeProvider.GetTimestamp();
        bool eject;
        lock (counters)
        {
            eject = counters.Add(failure, now, settings, timeProvider);
        }

        if (eject)
        {
            TryEject(cluster, destination, counters, settings, now);
        }
    }

    private void TryEject(ClusterState cluster, DestinationState destination, Counters counters, OutlierSettings settings, long now)
    {
        if (destination.Health.Passive == DestinationHealth.Unhealthy)
        {
            return;
        }

        var all = cluster.DestinationsState.AllDestinations;
        var ejected = 0;
        foreach (var d in all)
        {
            if (d.Health.Passive == DestinationHealth.Unhealthy)
            {
                ejected++;
            }
        }

        var allowed = Math.Max(1, (int)Math.Floor(all.Count * settings.MaxEjectionPercent / 100));
        if (ejected + 1 > allowed)
        {
            Log.EjectionCapped(logger, destination.DestinationId, cluster.ClusterId, ejected, all.Count);
            return;
        }

        TimeSpan period;
        lock (counters)
        {
            period = counters.NextEjection(now, settings, timeProvider);
        }

        GatewayTelemetry.Ejections.Add(1, new KeyValuePair<string, object?>(GatewayTelemetry.ClusterTag, cluster.ClusterId));
        Log.Ejected(logger, destination.DestinationId, cluster.ClusterId, period);
        healthUpdater.SetPassive(cluster, destination, DestinationHealth.Unhealthy, period);
    }

    private sealed class Counters
    {
        private int _consecutive;
        private int _total;
        private int _failures;
        private long _windowStart;
        private int _multiplier;
        private long _lastEjectionEnd;
        private OutlierSettings? _settings;

        /// <summary>A success under consecutive-failure detection alone (no window to count in): ends a run of failures, if any.</summary>
        public void Succeeded()
        {
            if (Volatile.Read(ref _consecutive) == 0)
            {
                return;
            }

            lock (this)
            {
                _consecutive = 0;
            }
        }

        public bool Add(bool failure, long now, OutlierSettings settings, TimeProvider time)
        {
            if (!ReferenceEquals(settings, _settings))
            {
                // The cluster's configuration changed: the window counted under other settings starts over (under consecutive
                // failures alone no window is kept, as a success is not counted there). A run of failures carries on.
                _settings = settings;
                _windowStart = 0;
                _total = 0;
                _failures = 0;
            }

            var rate = settings.FailureRate;
            if (rate is not null)
            {
                CountInWindow(now, settings, time);
            }

            if (!failure)
            {
                _consecutive = 0;
                return false;
            }

            _consecutive++;
            if (rate is not null)
            {
                _failures++;
            }

            if (settings.ConsecutiveFailures is { } limit && _consecutive >= limit)
            {
                return true;
            }

            return rate is not null && _total >= settings.MinimumRequests && (double)_failures / _total >= rate;
        }

        private void CountInWindow(long now, OutlierSettings settings, TimeProvider time)
        {
            if (_windowStart == 0 || time.GetElapsedTime(_windowStart, now) >= settings.Interval)
            {
                _windowStart = now;
                _total = 0;
                _failures = 0;
            }

            _total++;
        }

        /// <summary>The next ejection's length: one more base time per ejection, less one per base time spent healthy since the last.</summary>
        public TimeSpan NextEjection(long now, OutlierSettings settings, TimeProvider time)
        {
            if (_lastEjectionEnd != 0 && now > _lastEjectionEnd)
            {
                var healthy = time.GetElapsedTime(_lastEjectionEnd, now);
                _multiplier = Math.Max(0, _multiplier - (int)(healthy.Ticks / settings.BaseEjectionTime.Ticks));
            }

            _multiplier++;
            var period = TimeSpan.FromTicks(Math.Min(settings.BaseEjectionTime.Ticks * _multiplier, settings.MaxEjectionTime.Ticks));
            _lastEjectionEnd = now + (long)(period.TotalSeconds * time.TimestampFrequency);
            _consecutive = 0;
            _total = 0;
            _failures = 0;
            _windowStart = now;
            return period;
        }
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 1301, Level = LogLevel.Warning, Message = "Destination '{Destination}' of cluster '{Cluster}' is ejected as an outlier for {Period}.")]
        public static partial void Ejected(ILogger logger, string destination, string cluster, TimeSpan period);

        [LoggerMessage(EventId = 1302, Level = LogLevel.Warning, Message = "Destination '{Destination}' of cluster '{Cluster}' is an outlier but stays in: {Ejected} of {Total} destinations are already ejected, the cap.")]
        public static partial void EjectionCapped(ILogger logger, string destination, string cluster, int ejected, int total);
    }
}
