using System.Collections.Concurrent;
using System.Diagnostics;
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
internal sealed class RequestClient : IRequestClient, IAsyncDisposable, IDisposable
{
    private static int s_nextSlot = -1;

    [ThreadStatic]
    private static CancellationTokenSource? t_timeoutSource;

    private readonly IOptions<MessagingTopology> _topology;
    private readonly IOptions<RequestResponseOptions> _optionsSource;
    private readonly IServiceProvider _services;
    private readonly MessageBus _bus;
    private readonly IMessageSerializer _serializer;
    private readonly ILogger _logger;
    private readonly TimeProvider _timeProvider;
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
    private void EnsureInitialized()
    {
        if (_initialized)
        {
            return;
        }

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
        EnsureInitialized();
        return SendAsync<TRequest, TResponse>(request, _options.DefaultTimeout, cancellationToken);
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

        var entry = GetEntry<TRequest, TResponse>();
        if (!entry.IsDirect || PatternsTelemetry.Source.HasListeners() || PatternsTelemetry.OperationDuration.Enabled)
        {
            return SendInlineInstrumentedAsync(entry, request, default, null, timeout, cancellationToken);
        }

        var timeoutSource = timeout == Timeout.InfiniteTimeSpan ? null : RentTimeoutSource();
        ValueTask<TResponse> pending;
        try
        {
            pending = entry.InvokeAsync(request, null, timeoutSource?.Token ?? cancellationToken);
        }
        catch (Exception ex)
        {
            return ValueTask.FromException<TResponse>(Remote(entry, ex));
        }

        if (pending.IsCompletedSuccessfully)
        {
            ReturnTimeoutSource(timeoutSource);
            return pending;
        }

        // The handler went asynchronous and keeps this token: AwaitInlineAsync arms and then recycles it.
        return AwaitInlineAsync(entry, pending, timeoutSource, timeout, cancellationToken);
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

    private static void ValidateTimeout(TimeSpan timeout)
    {
        if (timeout <= TimeSpan.Zero && timeout != Timeout.InfiniteTimeSpan)
        {
            throw new ArgumentOutOfRangeException(nameof(timeout), timeout, "A request timeout must be positive or Timeout.InfiniteTimeSpan.");
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
        where TRequest : notnull
    {
        var slot = Slot<TRequest, TResponse>.Index;
        var slots = _slots;
        if ((uint)slot < (uint)slots.Length && slots[slot] is RequestHandlerEntry<TRequest, TResponse> cached)
        {
            return cached;
        }

        if (!_entries.TryGetValue((typeof(TRequest), typeof(TResponse)), out var found)
            || found is not RequestHandlerEntry<TRequest, TResponse> entry)
        {
            throw new HandlerNotFoundException(typeof(TRequest), typeof(TResponse));
        }

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

            current[slot] = entry;
            _slots = current;
        }

        return entry;
    }

    /// <summary>
    /// Takes this thread's cached source (so a handler that sends a nested request gets its own), or a new one.
    /// Its timer is not armed: a handler that completes synchronously never needs it.
    /// </summary>
    private CancellationTokenSource RentTimeoutSource()
    {
        var source = t_timeoutSource;
        if (source is null || !ReferenceEquals(_timeProvider, TimeProvider.System))
        {
            return new CancellationTokenSource();
        }

        t_timeoutSource = null;
        return source;
    }

    /// <summary>
    /// Keeps a source for this thread's next request, reset first: <see cref="CancellationTokenSource.TryReset"/> drops the
    /// registrations the handler left on its token (so another request's cancellation never runs them) and fails once
    /// the source was cancelled, in which case it is disposed instead.
    /// </summary>
    private void ReturnTimeoutSource(CancellationTokenSource? source)
    {
        if (source is null)
        {
            return;
        }

        if (ReferenceEquals(_timeProvider, TimeProvider.System) && source.TryReset())
        {
            t_timeoutSource = source;
        }
        else
        {
            source.Dispose();
        }
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
