using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Patterns.Hosting;
using Patterns.Messaging;
using Patterns.Serialization;
using Patterns.Telemetry;
using Patterns.Transport;

namespace Patterns.RequestResponse;

/// <summary>
/// The request client. In-process it calls the handler directly: a synchronous handler costs one
/// virtual call and nothing on the heap (the timeout token comes from a per-thread cache and its timer
/// is only armed if the handler goes asynchronous). Over other transports requests travel as messages.
/// </summary>
/// <remarks>
/// Each request/response pair gets a slot (<see cref="Slot{TRequest, TResponse}"/>) in <see cref="_slots"/>, filled on its
/// first in-process call with an <see cref="InlineRoute{TRequest, TResponse}"/>: a sealed type, so finding it is one load and
/// one type compare, and it says whether the call may go straight to the handler.
/// </remarks>
internal sealed class RequestClient : IRequestClient, IAsyncDisposable, IDisposable
{
    private static int s_nextSlot = -1;

    [ThreadStatic]
    private static TimeoutCache? t_timeouts;

    private readonly IOptions<MessagingTopology> _topology;
    private readonly IOptions<RequestResponseOptions> _optionsSource;
    private readonly IServiceProvider _services;
    private readonly MessageBus _bus;
    private readonly IMessageSerializer _serializer;
    private readonly ILogger _logger;
    private readonly TimeProvider _timeProvider;
    private readonly bool _systemClock;
    private Dictionary<(Type, Type), RequestHandlerEntry> _entries = [];
    private RequestResponseOptions _options = new();
    private bool _inline;
    private volatile bool _initialized;
    private readonly Lock _gate = new();
    private readonly ConcurrentDictionary<Guid, PendingReply> _pending = new();
    private readonly SemaphoreSlim _replyGate = new(1, 1);
    private object?[] _slots = new object?[8];
    private string? _replyQueue;
    private TransportSubscription? _replySubscription;

    public RequestClient(
        IOptions<MessagingTopology> topology,
        IServiceProvider services,
        MessageBus bus,
        IMessageSerializer serializer,
        IOptions<RequestResponseOptions> options,
        ILoggerFactory loggerFactory)
    {
        _topology = topology;
        _optionsSource = options;
        _services = services;
        _bus = bus;
        _serializer = serializer;
        _logger = loggerFactory.CreateLogger<RequestClient>();
        _timeProvider = bus.TimeProvider;
        _systemClock = ReferenceEquals(_timeProvider, TimeProvider.System);
    }

    internal IEnumerable<RequestHandlerEntry> Entries
    {
        get
        {
            EnsureInitialized();
            return _entries.Values;
        }
    }

    internal RequestResponseOptions Options
    {
        get
        {
            EnsureInitialized();
            return _options;
        }
    }

    /// <summary>Reads options and builds handler entries on first use, so that invalid options surface through start-up validation rather than a constructor.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void EnsureInitialized()
    {
        if (!_initialized)
        {
            Initialize();
        }
    }

    private void Initialize()
    {
        lock (_gate)
        {
            if (_initialized)
            {
                return;
            }

            var options = _optionsSource.Value;
            var entries = new Dictionary<(Type, Type), RequestHandlerEntry>();
            var filters = _services.GetServices<Consuming.IConsumeFilter>().ToArray();
            foreach (var registration in _topology.Value.RequestHandlers)
            {
                var entry = registration.CreateEntry(_services, _timeProvider);
                entry.Configure(_services, options.RequestQueuePrefix + _bus.Registry.GetName(registration.RequestType), filters);
                entries[(registration.RequestType, registration.ResponseType)] = entry;
                _bus.Registry.GetName(registration.RequestType);
                _bus.Registry.GetName(registration.ResponseType);
            }

            _options = options;
            _entries = entries;
            _inline = _bus.Transport.IsInProcess && options.PreferInProcessDispatch;
            _initialized = true;
        }
    }

    public ValueTask<TResponse> SendAsync<TRequest, TResponse>(TRequest request, CancellationToken cancellationToken = default)
        where TRequest : notnull
    {
        // The pair's route exists only once the client is initialized and dispatches in process, and it carries the default
        // timeout (validated with the options), read through the route so that a thread that sees the route sees the
        // options it was made with. Everything else (no route yet, filters, a pipeline, a context, telemetry listening, a
        // cancelled token, a null request) takes the general path, which checks and reports it.
        var slots = _slots;
        var slot = Slot<TRequest, TResponse>.Index;
        if ((uint)slot < (uint)slots.Length
            && slots[slot] is InlineRoute<TRequest, TResponse> { IsDirect: true } route
            && request is not null
            && !cancellationToken.IsCancellationRequested
            && !InstrumentsCalls)
        {
            return route.SendDirect(this, request, route.DefaultTimeout, cancellationToken);
        }

        EnsureInitialized();
        return SendAsync<TRequest, TResponse>(request!, _options.DefaultTimeout, cancellationToken);
    }

    public ValueTask<TResponse> SendAsync<TResponse>(IRequest<TResponse> request, CancellationToken cancellationToken = default)
    {
        EnsureInitialized();
        return SendAsync(request, _options.DefaultTimeout, cancellationToken);
    }

    public ValueTask<TResponse> SendAsync<TResponse>(IRequest<TResponse> request, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        EnsureInitialized();
        if (!_inline)
        {
            // Over a transport only the request's name travels, and the handler may live in another process.
            return SendAsync<IRequest<TResponse>, TResponse>(request, timeout, cancellationToken);
        }

        return Unwrap(FindEntry<TResponse>(request.GetType()).SendThroughAsync(this, request, default, timeout, cancellationToken));
    }

    public ValueTask<Response<TResponse>> GetResponseAsync<TRequest, TResponse>(
        TRequest request, MessageOptions options, TimeSpan? timeout = null, CancellationToken cancellationToken = default)
        where TRequest : notnull
    {
        ArgumentNullException.ThrowIfNull(request);
        EnsureInitialized();
        var effective = timeout ?? _options.DefaultTimeout;
        if (!_inline || typeof(TRequest) == request.GetType() || _entries.ContainsKey((typeof(TRequest), typeof(TResponse))))
        {
            return GetResponseCoreAsync<TRequest, TResponse>(request, options, effective, cancellationToken);
        }

        // Declared as a base type or interface (IRequest<TResponse>): the handler is registered for the run-time type.
        return FindEntry<TResponse>(request.GetType()).SendThroughAsync(this, request, options, effective, cancellationToken);
    }

    internal ValueTask<Response<TResponse>> GetResponseCoreAsync<TRequest, TResponse>(
        TRequest request, in MessageOptions options, TimeSpan timeout, CancellationToken cancellationToken)
        where TRequest : notnull
    {
        ValidateTimeout(timeout);
        if (cancellationToken.IsCancellationRequested)
        {
            return ValueTask.FromCanceled<Response<TResponse>>(cancellationToken);
        }

        return _inline
            ? SendInlineWithResponseAsync(GetEntry<TRequest, TResponse>(), request, options, timeout, cancellationToken)
            : SendOverTransportAsync<TRequest, TResponse>(request, options, timeout, cancellationToken);
    }

    public ValueTask<TResponse> SendAsync<TRequest, TResponse>(TRequest request, TimeSpan timeout, CancellationToken cancellationToken = default)
        where TRequest : notnull
    {
        ArgumentNullException.ThrowIfNull(request);
        EnsureInitialized();
        ValidateTimeout(timeout);
        if (cancellationToken.IsCancellationRequested)
        {
            return ValueTask.FromCanceled<TResponse>(cancellationToken);
        }

        if (!_inline)
        {
            return Unwrap(SendOverTransportAsync<TRequest, TResponse>(request, default, timeout, cancellationToken));
        }

        var route = GetRoute<TRequest, TResponse>();
        return route.IsDirect && !InstrumentsCalls
            ? route.SendDirect(this, request, timeout, cancellationToken)
            : SendInlineInstrumentedAsync(route.Entry, request, default, null, timeout, cancellationToken);
    }

    /// <summary>Gets a value indicating whether an activity listener or the operation-duration histogram listens, so a call must go the instrumented way.</summary>
    private static bool InstrumentsCalls
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => PatternsTelemetry.Source.HasListeners() || PatternsTelemetry.OperationDuration.Enabled;
    }

    /// <summary>
    /// Ends a synchronous call's use of its timeout source: reset (<see cref="CancellationTokenSource.TryReset"/> drops the
    /// registrations the handler left on its token, so another request's cancellation never runs them) and kept for this
    /// thread's next request, or disposed when it cannot be reset or did not come from the cache.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void ReleaseTimeoutSource(TimeoutCache? cache, CancellationTokenSource? source)
    {
        if (cache is not null && source!.TryReset())
        {
            cache.InUse = false;
        }
        else if (source is not null)
        {
            ReleaseTimeoutSourceSlow(cache, source);
        }
    }

    private void ReleaseTimeoutSourceSlow(TimeoutCache? cache, CancellationTokenSource source)
    {
        if (cache is not null)
        {
            // Cancelled or its timer could not be stopped: it cannot serve another request.
            cache.Source = null;
            cache.InUse = false;
            source.Dispose();
            return;
        }

        ReturnTimeoutSource(source);
    }

    public async ValueTask DisposeAsync()
    {
        if (_replySubscription is { } subscription)
        {
            await subscription.DisposeAsync().ConfigureAwait(false);
        }

        foreach (var pending in _pending.Values)
        {
            pending.Fail(new ObjectDisposedException(nameof(IRequestClient), "The request client stopped before the response arrived."));
        }

        _replyGate.Dispose();
    }

    public void Dispose()
    {
        foreach (var pending in _pending.Values)
        {
            pending.Fail(new ObjectDisposedException(nameof(IRequestClient), "The request client stopped before the response arrived."));
        }

        _replyGate.Dispose();
    }

    internal async Task StopAsync(CancellationToken drainDeadline)
    {
        if (_replySubscription is { } subscription)
        {
            await subscription.StopAsync(drainDeadline).ConfigureAwait(false);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void ValidateTimeout(TimeSpan timeout)
    {
        if ((timeout <= TimeSpan.Zero || timeout > RequestResponseOptions.MaxTimeout) && timeout != Timeout.InfiniteTimeSpan)
        {
            throw new ArgumentOutOfRangeException(nameof(timeout), timeout, RequestResponseOptions.TimeoutRangeMessage);
        }
    }

    private static async ValueTask<TResponse> Unwrap<TResponse>(ValueTask<Response<TResponse>> pending) =>
        (await pending.ConfigureAwait(false)).Message;

    /// <summary>Finds the entry of a request known by its run-time type only (no generic instantiation at run time: AOT-safe).</summary>
    private RequestHandlerEntry<TResponse> FindEntry<TResponse>(Type requestType) =>
        _entries.TryGetValue((requestType, typeof(TResponse)), out var found) && found is RequestHandlerEntry<TResponse> entry
            ? entry
            : throw new HandlerNotFoundException(requestType, typeof(TResponse));

    private RequestHandlerEntry<TRequest, TResponse> GetEntry<TRequest, TResponse>()
        where TRequest : notnull =>
        GetRoute<TRequest, TResponse>().Entry;

    /// <summary>Gets the pair's in-process route, making it on the first call. Only the in-process paths call this, so a route in a slot means the client dispatches in process.</summary>
    private InlineRoute<TRequest, TResponse> GetRoute<TRequest, TResponse>()
        where TRequest : notnull
    {
        var slot = Slot<TRequest, TResponse>.Index;
        var slots = _slots;
        if ((uint)slot < (uint)slots.Length && slots[slot] is InlineRoute<TRequest, TResponse> cached)
        {
            return cached;
        }

        if (!_entries.TryGetValue((typeof(TRequest), typeof(TResponse)), out var found)
            || found is not RequestHandlerEntry<TRequest, TResponse> entry)
        {
            throw new HandlerNotFoundException(typeof(TRequest), typeof(TResponse));
        }

        var route = new InlineRoute<TRequest, TResponse>(entry, _options.DefaultTimeout);

        lock (_gate)
        {
            var current = _slots;
            if (slot >= current.Length)
            {
                Array.Resize(ref current, Math.Max(slot + 1, current.Length * 2));
            }
            else
            {
                current = (object?[])current.Clone();
            }

            current[slot] ??= route;
            route = (InlineRoute<TRequest, TResponse>)current[slot]!;
            _slots = current;
        }

        return route;
    }

    /// <summary>
    /// Keeps a source that no thread's cache holds for this thread's next request, reset first:
    /// <see cref="CancellationTokenSource.TryReset"/> drops the registrations the handler left on its token (so another
    /// request's cancellation never runs them) and fails once the source was cancelled, in which case it is disposed instead.
    /// A cache that already holds a source (free or in use by a call on this thread's stack) keeps it.
    /// </summary>
    private void ReturnTimeoutSource(CancellationTokenSource? source)
    {
        if (source is null)
        {
            return;
        }

        if (_systemClock && source.TryReset())
        {
            var cache = t_timeouts ??= new TimeoutCache();
            if (cache.Source is null)
            {
                cache.Source = source;
                return;
            }
        }

        source.Dispose();
    }

    private async ValueTask<TResponse> AwaitInlineAsync<TRequest, TResponse>(
        RequestHandlerEntry<TRequest, TResponse> entry, ValueTask<TResponse> pending, CancellationTokenSource? timeoutSource, TimeSpan timeout, CancellationToken cancellationToken)
        where TRequest : notnull
    {
        ITimer? timer = null;
        CancellationTokenRegistration registration = default;
        if (timeoutSource is not null)
        {
            if (ReferenceEquals(_timeProvider, TimeProvider.System))
            {
                timeoutSource.CancelAfter(timeout);
            }
            else
            {
                timer = _timeProvider.CreateTimer(static s => ((CancellationTokenSource)s!).Cancel(), timeoutSource, timeout, Timeout.InfiniteTimeSpan);
            }

            if (cancellationToken.CanBeCanceled)
            {
                registration = cancellationToken.UnsafeRegister(static s => ((CancellationTokenSource)s!).Cancel(), timeoutSource);
            }
        }

        try
        {
            return await pending.ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            throw;
        }
        catch (OperationCanceledException ex) when (timeoutSource?.IsCancellationRequested == true)
        {
            throw new RequestTimeoutException(_bus.Registry.GetName(typeof(TRequest)), timeout) { Source = ex.Source };
        }
        catch (Exception ex)
        {
            throw Remote(entry, ex);
        }
        finally
        {
            await registration.DisposeAsync().ConfigureAwait(false);
            if (timer is not null)
            {
                await timer.DisposeAsync().ConfigureAwait(false);
            }

            ReturnTimeoutSource(timeoutSource);
        }
    }

    private async ValueTask<Response<TResponse>> SendInlineWithResponseAsync<TRequest, TResponse>(
        RequestHandlerEntry<TRequest, TResponse> entry, TRequest request, MessageOptions options, TimeSpan timeout, CancellationToken cancellationToken)
        where TRequest : notnull
    {
        var context = entry.WantsContext ? new RequestContext(default, entry.Services, _bus) : null;
        var response = await SendInlineInstrumentedAsync(entry, request, options, context, timeout, cancellationToken).ConfigureAwait(false);
        return new Response<TResponse>(response, context?.ResponseHeadersOrNull);
    }

    private async ValueTask<TResponse> SendInlineInstrumentedAsync<TRequest, TResponse>(
        RequestHandlerEntry<TRequest, TResponse> entry, TRequest request, MessageOptions options, RequestContext? context, TimeSpan timeout, CancellationToken cancellationToken)
        where TRequest : notnull
    {
        var name = _bus.Registry.GetName(typeof(TRequest));
        var envelope = new Envelope
        {
            MessageId = options.MessageId ?? MessageIds.Next(),
            CorrelationId = options.CorrelationId,
            CausationId = options.CausationId,
            PartitionKey = options.PartitionKey,
            Headers = options.Headers,
            MessageType = name,
            Body = request,
        };
        using var activity = PatternsTelemetry.StartSend(_bus.Transport.SystemName, "send", name, ref envelope);
        if (entry.WantsContext || entry.HasFilters)
        {
            envelope = envelope with { SentAt = _timeProvider.GetUtcNow() };
        }

        if (entry.WantsContext)
        {
            context ??= new RequestContext(default, entry.Services, _bus);
            context.UseEnvelope(envelope);
        }

        var started = Stopwatch.GetTimestamp();
        using var timeoutSource = timeout == Timeout.InfiniteTimeSpan ? null : new CancellationTokenSource(timeout, _timeProvider);
        using var linked = timeoutSource is null ? null : CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, timeoutSource.Token);
        try
        {
            return await entry.InvokeFilteredAsync(request, context, envelope, linked?.Token ?? cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            throw;
        }
        catch (OperationCanceledException) when (timeoutSource?.IsCancellationRequested == true)
        {
            throw TimedOut(name, timeout, activity);
        }
        catch (Exception ex)
        {
            PatternsTelemetry.RecordError(activity, ex);
            throw Remote(entry, ex);
        }
        finally
        {
            if (PatternsTelemetry.OperationDuration.Enabled)
            {
                PatternsTelemetry.OperationDuration.Record(Stopwatch.GetElapsedTime(started).TotalSeconds, PatternsTelemetry.Tags(_bus.Transport.SystemName, name));
            }
        }
    }

    private static RequestTimeoutException TimedOut(string requestName, TimeSpan timeout, Activity? activity)
    {
        var timedOut = new RequestTimeoutException(requestName, timeout);
        PatternsTelemetry.RecordError(activity, timedOut);
        return timedOut;
    }

    private RequestFailedException Remote(RequestHandlerEntry entry, Exception exception) =>
        exception as RequestFailedException
        ?? new RequestFailedException(_bus.Registry.GetName(entry.RequestType), exception.GetType().FullName ?? exception.GetType().Name, exception.Message, exception);

    private async ValueTask<Response<TResponse>> SendOverTransportAsync<TRequest, TResponse>(TRequest request, MessageOptions options, TimeSpan timeout, CancellationToken cancellationToken)
        where TRequest : notnull
    {
        var name = _bus.Registry.GetName(request.GetType());

        // The timeout covers everything, including setting up the reply queue and waiting for a lost connection.
        var sentAt = _timeProvider.GetUtcNow();
        using var timeoutSource = timeout == Timeout.InfiniteTimeSpan ? null : new CancellationTokenSource(timeout, _timeProvider);
        using var linked = timeoutSource is null ? null : CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, timeoutSource.Token);
        var token = linked?.Token ?? cancellationToken;
        string replyTo;
        try
        {
            replyTo = await EnsureReplyQueueAsync(token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested && timeoutSource?.IsCancellationRequested == true)
        {
            throw TimedOut(name, timeout, null);
        }

        var id = options.MessageId ?? MessageIds.Next();
        var envelope = new Envelope
        {
            MessageId = id,
            CorrelationId = options.CorrelationId ?? id,
            CausationId = options.CausationId,
            PartitionKey = options.PartitionKey,
            Headers = options.Headers,
            MessageType = name,
            Body = request,
            SentAt = sentAt,
            ReplyTo = replyTo,
        };
        if (timeout != Timeout.InfiniteTimeSpan)
        {
            // The deadline travels with the request: a responder that gets it too late dead-letters it unhandled, and a
            // handler still running at the deadline sees its token cancelled.
            envelope = MessageBus.WithTiming(envelope, new MessageOptions { TimeToLive = timeout }, sentAt);
        }

        var pending = new PendingReply<TResponse>(_serializer, name);
        _pending[id] = pending;
        using var activity = PatternsTelemetry.StartSend(_bus.Transport.SystemName, "send", name, ref envelope);
        try
        {
            using (token.UnsafeRegister(static s => ((PendingReply)s!).Cancel(), pending))
            {
                ValueTask sending;
                try
                {
                    sending = _bus.Transport.SendAsync(_options.RequestQueuePrefix + name, envelope, token);
                }
                catch (Exception ex)
                {
                    sending = ValueTask.FromException(ex);
                }

                if (!sending.IsCompletedSuccessfully)
                {
                    // A broker may confirm the request only after writing it to disk, by which time the response
                    // can be back: whichever comes first ends the wait. A response proves the request arrived.
                    var sendTask = sending.AsTask();
                    if (await Task.WhenAny(sendTask, pending.Task).ConfigureAwait(false) != sendTask && pending.Task.IsCompletedSuccessfully)
                    {
                        _ = sendTask.ContinueWith(static t => _ = t.Exception, CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted | TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
                        return await pending.Task.ConfigureAwait(false);
                    }

                    await WhenSentAsync(sendTask, name).ConfigureAwait(false);
                }

                return await pending.Task.ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            throw;
        }
        catch (OperationCanceledException) when (timeoutSource?.IsCancellationRequested == true)
        {
            throw TimedOut(name, timeout, activity);
        }
        catch (Exception ex) when (activity is not null)
        {
            PatternsTelemetry.RecordError(activity, ex);
            throw;
        }
        finally
        {
            _pending.TryRemove(id, out _);
        }
    }

    private async Task WhenSentAsync(Task sending, string name)
    {
        try
        {
            await sending.ConfigureAwait(false);
        }
        catch (QueueNotFoundException ex)
        {
            throw new HandlerNotFoundException(
                $"No request handler listens for request type '{name}': its queue '{_options.RequestQueuePrefix + name}' does not exist, so no process with a handler "
                + "for it has started. Start one (AddRequestResponse(r => r.AddHandler<...>())); do not declare the request queue yourself, or requests would wait there unanswered until they time out.",
                ex);
        }
    }

    private async ValueTask<string> EnsureReplyQueueAsync(CancellationToken cancellationToken)
    {
        if (Volatile.Read(ref _replyQueue) is { } ready)
        {
            return ready;
        }

        await _replyGate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (_replyQueue is { } existing)
            {
                return existing;
            }

            var queue = $"replies.{Environment.MachineName}.{Guid.NewGuid():N}";
            _replySubscription = await _bus.SubscribeAsync(
                new SubscriptionRequest
                {
                    Address = TransportAddress.Queue(queue),
                    ConsumerGroup = queue,
                    Concurrency = 1,
                    Temporary = true,
                    ConnectionLost = OnReplyConnectionLost,
                },
                OnReply,
                cancellationToken).ConfigureAwait(false);
            Volatile.Write(ref _replyQueue, queue);
            return queue;
        }
        finally
        {
            _replyGate.Release();
        }
    }

    /// <summary>The reply queue went away with the connection: responses to requests in flight can no longer arrive, so they fail now rather than at their timeout.</summary>
    private void OnReplyConnectionLost(Exception reason)
    {
        foreach (var (correlation, pending) in _pending)
        {
            if (_pending.TryRemove(correlation, out _))
            {
                pending.Fail(new TransportUnavailableException(
                    $"The connection to the transport was lost before the response to request '{pending.RequestName}' arrived: {reason.Message}", reason));
            }
        }
    }

    private ValueTask<Settlement> OnReply(Envelope envelope, CancellationToken cancellationToken)
    {
        if (envelope.CorrelationId is { } correlation && _pending.TryRemove(correlation, out var pending))
        {
            pending.Complete(envelope);
        }
        else
        {
            HostingLog.LateReply(_logger, envelope.CorrelationId);
        }

        return new ValueTask<Settlement>(Settlement.Ack);
    }

    private static class Slot<TRequest, TResponse>
    {
        public static readonly int Index = Interlocked.Increment(ref s_nextSlot);
    }

    /// <summary>One request/response pair's entry, whether an in-process call may go straight to its handler, and the client's default timeout.</summary>
    private sealed class InlineRoute<TRequest, TResponse>(RequestHandlerEntry<TRequest, TResponse> entry, TimeSpan defaultTimeout)
        where TRequest : notnull
    {
        // The handler's call without context, filters or pipeline; made only for a direct entry.
        private readonly Func<TRequest, CancellationToken, ValueTask<TResponse>>? _direct = entry.IsDirect ? entry.CreateDirectCall() : null;

        public RequestHandlerEntry<TRequest, TResponse> Entry { get; } = entry;

        public bool IsDirect { get; } = entry.IsDirect;

        /// <summary>Gets the client's <see cref="RequestResponseOptions.DefaultTimeout"/>, read once the client was initialized.</summary>
        public TimeSpan DefaultTimeout { get; } = defaultTimeout;

        /// <summary>
        /// Calls a direct entry's handler on this thread. The timeout's source is this thread's cached one when it is free (a
        /// handler that sends a nested request gets a new one); its timer is armed only if the handler goes asynchronous.
        /// </summary>
        public ValueTask<TResponse> SendDirect(RequestClient client, TRequest request, TimeSpan timeout, CancellationToken cancellationToken)
        {
            var entry = Entry;
            TimeoutCache? cache = null;
            CancellationTokenSource? timeoutSource = null;
            if (timeout != Timeout.InfiniteTimeSpan)
            {
                if (client._systemClock && (cache = t_timeouts) is { InUse: false, Source: { } cached })
                {
                    cache.InUse = true;
                    timeoutSource = cached;
                }
                else
                {
                    cache = null;
                    timeoutSource = new CancellationTokenSource();
                }
            }

            ValueTask<TResponse> pending;
            try
            {
                var token = timeoutSource?.Token ?? cancellationToken;
                pending = _direct is { } direct ? direct(request, token) : entry.InvokeAsync(request, null, token);
            }
            catch (Exception ex)
            {
                client.ReleaseTimeoutSource(cache, timeoutSource);
                return ValueTask.FromException<TResponse>(client.Remote(entry, ex));
            }

            if (pending.IsCompletedSuccessfully)
            {
                client.ReleaseTimeoutSource(cache, timeoutSource);
                return pending;
            }

            // The handler went asynchronous and keeps this token: it leaves this thread's cache, and AwaitInlineAsync arms it
            // and, once the call is over, recycles it on the thread that finishes.
            if (cache is not null)
            {
                cache.Source = null;
                cache.InUse = false;
            }

            return client.AwaitInlineAsync(entry, pending, timeoutSource, timeout, cancellationToken);
        }
    }

    /// <summary>
    /// A thread's reusable timeout source. <see cref="InUse"/> is set while a synchronous call on this thread holds it, so a
    /// nested request takes a new source. Touched only by its own thread.
    /// </summary>
    private sealed class TimeoutCache
    {
        public CancellationTokenSource? Source;

        public bool InUse;
    }

    private abstract class PendingReply
    {
        public abstract string RequestName { get; }

        public abstract void Complete(in Envelope envelope);

        public abstract void Fail(Exception exception);

        public abstract void Cancel();
    }

    private sealed class PendingReply<TResponse>(IMessageSerializer serializer, string requestName) : PendingReply
    {
        private readonly TaskCompletionSource<Response<TResponse>> _completion = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public Task<Response<TResponse>> Task => _completion.Task;

        public override string RequestName => requestName;

        public override void Complete(in Envelope envelope)
        {
            if (envelope.TryGetHeader(EnvelopeHeaders.ResponseError, out _))
            {
                envelope.TryGetHeader(EnvelopeHeaders.ExceptionType, out var type);
                envelope.TryGetHeader(EnvelopeHeaders.ExceptionMessage, out var message);
                _completion.TrySetException(new RequestFailedException(requestName, type ?? "unknown", message ?? string.Empty, null));
                return;
            }

            try
            {
                var response = envelope.Body is TResponse typed
                    ? typed
                    : envelope.Body is null && envelope.PayloadLength == 2 && envelope.Payload.Span.SequenceEqual("{}"u8) && envelope.MessageType is null
                        ? default!
                        : (TResponse)serializer.Deserialize(envelope.PayloadSequence, typeof(TResponse));
                _completion.TrySetResult(new Response<TResponse>(response, envelope.Headers));
            }
            catch (Exception ex)
            {
                _completion.TrySetException(new RequestFailedException(
                    requestName, ex.GetType().FullName ?? ex.GetType().Name, $"The response could not be read as '{typeof(TResponse).FullName}': {ex.Message}", ex));
            }
        }

        public override void Fail(Exception exception) => _completion.TrySetException(exception);

        public override void Cancel() => _completion.TrySetCanceled();
    }
}
