using System.Diagnostics;
using System.Globalization;
using Microsoft.Extensions.Logging;
using Patterns.Consuming;
using Patterns.Messaging;
using Patterns.PubSub;
using Patterns.Queues;
using Patterns.Telemetry;
using Patterns.Transport;

namespace Patterns.Hosting;

/// <summary>The sending side of pub/sub and queues, and the dead-letter queue API, on the configured transport.</summary>
internal sealed class MessageBus : IPublisher, IQueueSender, IDeadLetterQueue
{
    private readonly MessageTransport _transport;
    private readonly MessageTypeRegistry _registry;
    private readonly TimeProvider _timeProvider;
    private readonly ILogger _logger;
    private readonly bool _systemClock;
    private bool _hostStarted;

    public MessageBus(MessageTransport transport, MessageTypeRegistry registry, TimeProvider timeProvider, ILoggerFactory loggerFactory, ConsumerPaths? consuming = null)
    {
        _transport = transport;
        Consuming = consuming ?? new ConsumerPaths(new PatternsOptions(), null, timeProvider, loggerFactory);
        _registry = registry;
        _timeProvider = timeProvider;
        _systemClock = ReferenceEquals(timeProvider, TimeProvider.System);
        _logger = loggerFactory.CreateLogger<MessageBus>();
    }

    internal MessageTransport Transport => _transport;

    internal MessageTypeRegistry Registry => _registry;

    internal TimeProvider TimeProvider => _timeProvider;

    /// <summary>Gets the kernel's consumer path, which every subscription goes through (<see cref="SubscribeAsync(SubscriptionRequest, DeliveryHandler, CancellationToken)"/>).</summary>
    internal ConsumerPaths Consuming { get; }

    /// <summary>Subscribes on the transport through the kernel's consumer path: the one way Patterns consumes.</summary>
    internal ValueTask<TransportSubscription> SubscribeAsync(SubscriptionRequest request, DeliveryHandler handler, CancellationToken cancellationToken) =>
        Consuming.SubscribeAsync(_transport, request, handler, cancellationToken);

    /// <summary>Gets or sets a value indicating whether the host has started its consumers (and declared its queues).</summary>
    internal bool HostStarted
    {
        get => Volatile.Read(ref _hostStarted);
        set => Volatile.Write(ref _hostStarted, value);
    }

    public ValueTask PublishAsync<TMessage>(TMessage message, CancellationToken cancellationToken = default)
        where TMessage : notnull =>
        PublishCoreAsync(null, message, default, cancellationToken);

    public ValueTask PublishAsync<TMessage>(string topic, TMessage message, CancellationToken cancellationToken = default)
        where TMessage : notnull
    {
        ArgumentNullException.ThrowIfNull(topic);
        return PublishCoreAsync(topic, message, default, cancellationToken);
    }

    public ValueTask PublishAsync<TMessage>(string? topic, TMessage message, MessageOptions options, CancellationToken cancellationToken = default)
        where TMessage : notnull =>
        PublishCoreAsync(topic, message, options, cancellationToken);

    public ValueTask SendAsync<TMessage>(string queue, TMessage message, CancellationToken cancellationToken = default)
        where TMessage : notnull =>
        SendAsync(queue, message, default, cancellationToken);

    public ValueTask SendAsync<TMessage>(string queue, TMessage message, MessageOptions options, CancellationToken cancellationToken = default)
        where TMessage : notnull
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(queue);
        var envelope = CreateEnvelope(message, options);
        var activity = PatternsTelemetry.StartSend(_transport.SystemName, "send", queue, ref envelope);
        ValueTask pending;
        try
        {
            pending = _transport.SendAsync(queue, envelope, cancellationToken);
        }
        catch (QueueNotFoundException ex) when (!HostStarted)
        {
            PatternsTelemetry.RecordError(activity, ex);
            activity?.Dispose();
            throw NotStarted(ex, queue);
        }
        catch (Exception ex)
        {
            PatternsTelemetry.RecordError(activity, ex);
            activity?.Dispose();
            throw;
        }

        if (pending.IsCompletedSuccessfully)
        {
            // Consume the result even though it is known: a ValueTask backed by a pooled source is recycled by it.
            #pragma warning disable CA1849 // Completed already, so it does not block.
            pending.GetAwaiter().GetResult();
            #pragma warning restore CA1849
            OnSent(queue, activity);
            return default;
        }

        return AwaitSendAsync(pending, queue, activity);
    }

    internal ValueTask PublishCoreAsync<TMessage>(string? topic, TMessage message, in MessageOptions options, CancellationToken cancellationToken)
    {
        var envelope = CreateEnvelope(message, options);
        topic ??= envelope.MessageType!;
        var activity = PatternsTelemetry.StartSend(_transport.SystemName, "publish", topic, ref envelope);
        ValueTask<bool> pending;
        try
        {
            pending = _transport.PublishAsync(topic, envelope, cancellationToken);
        }
        catch (Exception ex)
        {
            PatternsTelemetry.RecordError(activity, ex);
            activity?.Dispose();
            throw;
        }

        if (pending.IsCompletedSuccessfully)
        {
            OnPublished(topic, pending.Result, activity);
            return default;
        }

        return AwaitPublishAsync(pending, topic, activity);
    }

    public ValueTask<IReadOnlyList<DeadLetterMessage>> PeekAsync(string queue, int maxCount = 100, CancellationToken cancellationToken = default) =>
        _transport.PeekDeadLettersAsync(queue, maxCount, cancellationToken);

    public ValueTask<int> ReplayAsync(string queue, int maxCount = int.MaxValue, CancellationToken cancellationToken = default) =>
        _transport.ReplayDeadLettersAsync(queue, maxCount, cancellationToken);

    public ValueTask<int> PurgeAsync(string queue, CancellationToken cancellationToken = default) =>
        _transport.PurgeDeadLettersAsync(queue, cancellationToken);

    internal Envelope CreateEnvelope<TMessage>(TMessage message, in MessageOptions options)
    {
        ArgumentNullException.ThrowIfNull(message);
        var envelope = new Envelope
        {
            MessageId = options.MessageId ?? MessageIds.Next(),
            CorrelationId = options.CorrelationId,
            CausationId = options.CausationId,
            MessageType = _registry.GetName(message.GetType()),
            Body = message,
            SentAt = _systemClock ? CoarseUtcClock.UtcNow : _timeProvider.GetUtcNow(),
            PartitionKey = options.PartitionKey,
            Headers = options.Headers,
        };
        return options.IsTimed ? WithTiming(envelope, options, _timeProvider.GetUtcNow()) : envelope;
    }

    /// <summary>Writes the scheduling and expiry headers of <paramref name="options"/>, checked, relative to <paramref name="now"/>.</summary>
    internal static Envelope WithTiming(in Envelope envelope, in MessageOptions options, DateTimeOffset now)
    {
        if (options.DeliverAt is not null && options.Delay is not null)
        {
            throw new ArgumentException("MessageOptions sets both DeliverAt and Delay; set one of them.", nameof(options));
        }

        if (options.Delay is { } delay && delay < TimeSpan.Zero)
        {
            throw new ArgumentOutOfRangeException(nameof(options), delay, "MessageOptions.Delay must not be negative.");
        }

        if (options.TimeToLive is { } ttl && ttl <= TimeSpan.Zero)
        {
            throw new ArgumentOutOfRangeException(nameof(options), ttl, "MessageOptions.TimeToLive must be positive.");
        }

        var headers = new List<KeyValuePair<string, string>>(2);
        if ((options.DeliverAt ?? (options.Delay is { } after ? now + after : null)) is { } due)
        {
            headers.Add(new(EnvelopeHeaders.DeliverAt, due.ToUniversalTime().ToString("O", CultureInfo.InvariantCulture)));
        }

        if (options.TimeToLive is { } timeToLive)
        {
            headers.Add(new(EnvelopeHeaders.ExpiresAt, (now + timeToLive).ToUniversalTime().ToString("O", CultureInfo.InvariantCulture)));
        }

        return envelope.WithHeaders(headers);
    }

    private async ValueTask AwaitSendAsync(ValueTask pending, string queue, Activity? activity)
    {
        try
        {
            await pending.ConfigureAwait(false);
        }
        catch (QueueNotFoundException ex) when (!HostStarted)
        {
            PatternsTelemetry.RecordError(activity, ex);
            activity?.Dispose();
            throw NotStarted(ex, queue);
        }
        catch (Exception ex)
        {
            PatternsTelemetry.RecordError(activity, ex);
            activity?.Dispose();
            throw;
        }

        OnSent(queue, activity);
    }

    private async ValueTask AwaitPublishAsync(ValueTask<bool> pending, string topic, Activity? activity)
    {
        bool routed;
        try
        {
            routed = await pending.ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            PatternsTelemetry.RecordError(activity, ex);
            activity?.Dispose();
            throw;
        }

        OnPublished(topic, routed, activity);
    }

    /// <summary>A queue that is missing because the host has not started (it declares queues at start) gets an error that says so.</summary>
    private static InvalidOperationException NotStarted(QueueNotFoundException exception, string queue) =>
        new($"Cannot send to queue '{queue}': the host has not started, so its queues are not declared yet. Send after IHost.StartAsync (or from a hosted service that starts after AddPatterns').", exception);

    private void OnSent(string destination, Activity? activity)
    {
        if (PatternsTelemetry.Sent.Enabled)
        {
            PatternsTelemetry.Sent.Add(1, PatternsTelemetry.Tags(_transport.SystemName, destination));
        }

        activity?.Dispose();
    }

    private void OnPublished(string topic, bool routed, Activity? activity)
    {
        OnSent(topic, activity);
        if (!routed)
        {
            if (PatternsTelemetry.Unrouted.Enabled)
            {
                PatternsTelemetry.Unrouted.Add(1, PatternsTelemetry.Tags(_transport.SystemName, topic));
            }

            if (HostStarted)
            {
                HostingLog.Unrouted(_logger, topic);
            }
            else
            {
                HostingLog.PublishedBeforeStart(_logger, topic);
            }
        }
    }
}
