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
    /// handler instead. Counted as the handler would: a 5xx or a failure to get a response (a timeout included) is a failure,
    /// unless the client aborted the request or its body failed or stalled on the client's side (<see cref="IsClientBodyFault(Exception?, HttpContext, bool)"/>); a
    /// request that failed before it was sent (a request transform threw) is not counted. An answer's body is judged later,
    /// in <see cref="Completed"/>.
    /// </summary>
    public void RecordResponse(HttpContext context, HttpResponseMessage? response, ResiliencePolicyRegistry registry, bool timedOut = false)
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
            && context.Features.Get<IForwarderErrorFeature>() is { Error: not (ForwarderError.RequestCreation or ForwarderError.RequestBodyCanceled or ForwarderError.None) } error)
        {
            if (error.Error == ForwarderError.RequestBodyClient)
            {
                if (UploadBrokenByDestination(error.Exception, context, timedOut))
                {
                    Record(cluster, destination, failure: true);
                }
            }
            else if (!IsClientBodyFault(error.Exception, context, error.Error == ForwarderError.RequestTimedOut))
            {
                // A timeout that came while the client's upload stalled (YARP says RequestTimedOut) is the client's.
                Record(cluster, destination, failure: true);
            }
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

    /// <summary>
    /// True when <paramref name="exception"/> comes from the client's request body: refused by the gateway's own server (see
    /// <see cref="IsClientBodyFault(Exception?)"/>), a read of it that failed on the client's side, such as a connection reset
    /// mid-upload, before Kestrel signals the request's <c>RequestAborted</c>, or an upload the client stalled: the gateway was
    /// waiting for the client's next bytes (<see cref="ClientBodyStream"/>) when a timeout ended the attempt (the request's,
    /// the attempt's, YARP's activity timeout: <paramref name="timedOut"/>, a cancellation, or the failed read of the body
    /// inside the attempt's failure, as the send reports it when the body copy failed first). The same over HTTP/1.1 and
    /// HTTP/2 to the destination: the body is read through the same stream. A destination that failed mid-upload without a
    /// timeout (a reset, a closed connection) is still its own failure.
    /// </summary>
    public static bool IsClientBodyFault(Exception? exception, HttpContext context, bool timedOut = false)
    {
        if (IsClientBodyFault(exception))
        {
            return true;
        }

        if (context.Request.Body is not ClientBodyStream body)
        {
            return false;
        }

        if (body.Failed)
        {
            return true;
        }

        var gatewayTimeout = timedOut || exception is Polly.Timeout.TimeoutRejectedException;
        if (gatewayTimeout)
        {
            body.TimedOut();
        }

        // What the destination did while the upload was in progress, over HTTP/1.1 (DestinationConnection): it answered (a 413,
        // a 408 of its own timeout waiting for a body still coming): judged by the answer's status; it closed its connection
        // unanswered: its failure, even when the attempt then ended by a timeout while the gateway waited on the client.
        if (body.DestinationAnswer is var status and > 0)
        {
            return status < 500;
        }

        if (body.DestinationHasClosed)
        {
            return false;
        }

        // Waiting on the client: a timeout of the gateway is the client's (its body was still coming). A read of the body that
        // was cancelled, not failed, without a timeout and with the client still there, was cancelled by the destination's
        // end of the exchange (an HTTP/2 reset cancels the body's copy): whichever of the two failures the send reports, that
        // is the destination's.
        return body.WaitingOnClient
            && (gatewayTimeout
                || (body.ReadError is not OperationCanceledException
                    && (exception is OperationCanceledException || Contains(exception, body.ReadError))));
    }

    /// <summary>
    /// From the route's transformer after a failure without an answer: YARP answers 400 when it reports the client's body as
    /// failing (<see cref="ForwarderError.RequestBodyClient"/>); when it was the destination that broke the upload off
    /// (<see cref="UploadBrokenByDestination"/>), the client gets 502 instead.
    /// </summary>
    public static void CorrectUploadStatus(HttpContext context, bool timedOut)
    {
        if (!context.Response.HasStarted
            && !context.RequestAborted.IsCancellationRequested
            && context.Features.Get<IForwarderErrorFeature>() is { Error: ForwarderError.RequestBodyClient } error
            && UploadBrokenByDestination(error.Exception, context, timedOut))
        {
            context.Response.StatusCode = StatusCodes.Status502BadGateway;
        }
    }

    /// <summary>
    /// For a request that YARP reports as <see cref="ForwarderError.RequestBodyClient"/> (the read of the
    /// client's body failed): true when it was the destination that broke the upload off. YARP says the client's body failed
    /// whenever the copy of it ends in a failed read, and a read is also cancelled when the destination ends the upload: an
    /// HTTP/2 destination resetting the stream (or closing the connection) cancels the body's copy, which then fails on the
    /// read it was waiting in. So it is the destination's failure when the read did not fail on the client's side, the client
    /// is still there, no timeout ended the copy (<paramref name="timedOut"/>: YARP's activity timeout, which also ends a
    /// stalled upload) and the read was cancelled; or when the destination closed its connection unanswered (HTTP/1.1,
    /// <see cref="DestinationConnection"/>). An answer it sent first is judged by its status.
    /// </summary>
    private static bool UploadBrokenByDestination(Exception? exception, HttpContext context, bool timedOut) =>
        !IsClientBodyFault(exception)
        && context.Request.Body is ClientBodyStream { Failed: false } body
        && (body.DestinationAnswer is var status and > 0
            ? status >= 500
            : body.DestinationHasClosed || (!timedOut && !body.GatewayTimedOut && body.ReadError is OperationCanceledException));

    private static bool Contains(Exception? exception, Exception? cause)
    {
        if (cause is null)
        {
            return false;
        }

        for (var e = exception; e is not null; e = e.InnerException)
        {
            if (ReferenceEquals(e, cause))
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>
    /// True when the destination broke off the body of the answer that went to the client after its headers (YARP's
    /// <see cref="ForwarderError.ResponseBodyDestination"/>), and that answer was not counted as a failure already (a 5xx, see
    /// <see cref="MarkFailedAnswer"/>). Read once the request is done, by outlier detection (<see cref="Completed"/>) and by the
    /// circuit breaker, so that both count the same answers.
    /// </summary>
    public static bool ResponseBodyBrokenOff(HttpContext context) =>
        context.Features.Get<IForwarderErrorFeature>()?.Error == ForwarderError.ResponseBodyDestination && context.Features.Get<FailedAnswer>() is null;

    /// <summary>
    /// Records one attempt on <paramref name="destination"/> as its answer's headers come (or it fails before them); a failure is
    /// a 5xx, a timeout or a transport error. An answer that is not a failure is counted in the failure-rate window, but does
    /// not end a run of consecutive failures yet: its body may still break off. <see cref="Completed"/> ends the run once the
    /// body is through, or counts the answer as a failure after all.
    /// </summary>
    public void Record(ClusterState cluster, DestinationState destination, bool failure)
    {
        var settings = ClusterPolicy.For(cluster.Model.Config).Outlier;
        if (settings is null || (!failure && settings.FailureRate is null))
        {
            // Consecutive failures only: an answer's headers change nothing (the run ends when its body is through).
            return;
        }

        var counters = _counters.GetValue(destination, static _ => new Counters());
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

    /// <summary>
    /// From YARP's passive health hook once the request is done (the response body forwarded, or given up), for the destination
    /// whose answer went to the client. A body that the destination broke off after its headers (YARP's
    /// <see cref="ForwarderError.ResponseBodyDestination"/>) turns the answer counted by <see cref="Record"/> into a failure; a
    /// complete answer that is not a 5xx ends a run of consecutive failures, and so does one whose client went away during the
    /// body (YARP reports <see cref="ForwarderError.ResponseBodyClient"/> or <see cref="ForwarderError.ResponseBodyCanceled"/>):
    /// never a failure. Failures before an answer were counted as they happened. The
    /// request's <see cref="HttpContext.RequestAborted"/> says nothing here: YARP aborts the client's connection itself when
    /// the destination broke off a body that had started, and Kestrel signals that abort on another thread.
    /// </summary>
    public void Completed(HttpContext context, ClusterState cluster, DestinationState destination)
    {
        var settings = ClusterPolicy.For(cluster.Model.Config).Outlier;
        if (settings is null)
        {
            return;
        }

        var response = context.Response;
        switch (context.Features.Get<IForwarderErrorFeature>()?.Error ?? ForwarderError.None)
        {
            case ForwarderError.ResponseBodyDestination when ResponseBodyBrokenOff(context):
                // A 5xx was counted as a failure already, when its headers came (whether or not anything had gone out to the
                // client: YARP answers 502 when nothing had, so the status here does not tell); any other answer was counted
                // as one that is not.
                var counters = _counters.GetValue(destination, static _ => new Counters());
                var now = timeProvider.GetTimestamp();
                bool eject;
                lock (counters)
                {
                    eject = counters.BodyFailed(now, settings, timeProvider);
                }

                if (eject)
                {
                    TryEject(cluster, destination, counters, settings, now);
                }

                break;
            case ForwarderError.None or ForwarderError.ResponseBodyClient or ForwarderError.ResponseBodyCanceled
                or ForwarderError.UpgradeRequestClient or ForwarderError.UpgradeResponseClient
                or ForwarderError.UpgradeRequestCanceled or ForwarderError.UpgradeResponseCanceled
                when response.StatusCode < 500 && context.Features.Get<FailedAnswer>() is null && _counters.TryGetValue(destination, out var ended):
                // A complete answer ends a run of failures, and so does one the client left in the middle (a stream, server-sent
                // events, a WebSocket usually end so): the destination answered and sent all it was asked to until then; without
                // this a destination that serves streams would never end a run. (YARP answers 502 when the client left before
                // anything went out; an answer the gateway made itself, 503 or 504, is no success either.) Without a run there
                // is nothing to write, so the usual request neither takes the lock nor dirties the counters' cache line.
                ended.Succeeded();
                break;
        }
    }

    /// <summary>
    /// Marks a request whose forwarded answer (the one YARP copies to the client) is a 5xx, counted as a failure when its headers
    /// came, so that <see cref="Completed"/> does not count its broken-off body as a second one. Only a failed answer sets it.
    /// </summary>
    public static void MarkFailedAnswer(HttpContext context) => context.Features.Set(FailedAnswer.Instance);

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
            // Two failures that both reached the limit (on two threads, or one from the passive health hook) both get here
            // before either's ejection shows in the destination's health: only the first ejects, so the ejection is not
            // lengthened twice nor counted twice.
            if (counters.IsEjected(now))
            {
                return;
            }

            period = counters.NextEjection(now, settings, timeProvider);
        }

        GatewayTelemetry.Ejections.Add(1, new KeyValuePair<string, object?>(GatewayTelemetry.ClusterTag, cluster.ClusterId));
        Log.Ejected(logger, destination.DestinationId, cluster.ClusterId, period);
        healthUpdater.SetPassive(cluster, destination, DestinationHealth.Unhealthy, period);
    }

    /// <summary>The mark of <see cref="MarkFailedAnswer"/>: one shared instance, the feature's presence is all it says.</summary>
    private sealed class FailedAnswer
    {
        public static readonly FailedAnswer Instance = new();
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

        /// <summary>An answer whose body came through: ends a run of failures, if any.</summary>
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

            if (settings.FailureRate is not null)
            {
                CountInWindow(now, settings, time);
            }

            // An answer that is not a failure ends a run of failures only once its body is through (Succeeded).
            return failure && Failed(settings);
        }

        /// <summary>An answer counted by <see cref="Add"/> as not a failure whose body the destination broke off: a failure after all.</summary>
        public bool BodyFailed(long now, OutlierSettings settings, TimeProvider time)
        {
            if (!ReferenceEquals(settings, _settings) || (settings.FailureRate is not null && (_windowStart == 0 || time.GetElapsedTime(_windowStart, now) >= settings.Interval)))
            {
                // The window that counted the answer is over (or was counted under other settings): count it in the new one.
                return Add(failure: true, now, settings, time);
            }

            return Failed(settings);
        }

        /// <summary>One more failure: in the run, and in the window where the attempt is counted already.</summary>
        private bool Failed(OutlierSettings settings)
        {
            _consecutive++;
            if (settings.FailureRate is not null)
            {
                _failures = Math.Min(_failures + 1, _total);
            }

            return Eject(settings);
        }

        private bool Eject(OutlierSettings settings) =>
            (settings.ConsecutiveFailures is { } limit && _consecutive >= limit)
            || (settings.FailureRate is { } rate && _total >= settings.MinimumRequests && (double)_failures / _total >= rate);

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

        /// <summary>True while the last ejection this detector made lasts.</summary>
        public bool IsEjected(long now) => _lastEjectionEnd != 0 && now < _lastEjectionEnd;

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
