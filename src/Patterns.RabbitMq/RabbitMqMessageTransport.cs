using System.Collections;
using System.Collections.Concurrent;
using System.Globalization;
using Microsoft.Extensions.Logging;
using Patterns.Messaging;
using Patterns.Serialization;
using Patterns.Telemetry;
using Patterns.Transport;
using RabbitMQ.Client;
using RabbitMQ.Client.Exceptions;

namespace Patterns.RabbitMq;

/// <summary>The transport SPI on RabbitMQ; see <see cref="RabbitMqTransport"/> for the guarantees.</summary>
internal sealed class RabbitMqMessageTransport : MessageTransport
{
    private static readonly TimeSpan MaxFullQueueBackoff = TimeSpan.FromMilliseconds(500);

    private const int MaxValidTopicEntries = 10_000;

    private readonly ConcurrentDictionary<RabbitMqSubscription, bool> _subscriptions = new();
    private readonly ConcurrentDictionary<string, bool> _validTopics = new(StringComparer.Ordinal);
    private volatile string? _lastValidTopic;
    private readonly IMessageSerializer _serializer;
    private volatile bool _topicExchangeReady;
    private volatile bool _disposed;

    public RabbitMqMessageTransport(RabbitMqTransportOptions options, IMessageSerializer serializer, TimeProvider timeProvider, ILoggerFactory loggerFactory)
    {
        Options = options;
        _serializer = serializer;
        TimeProvider = timeProvider;
        Logger = loggerFactory.CreateLogger("Patterns.RabbitMq.RabbitMqTransport");
        var factory = CreateConnectionFactory(options);
        PublishConnection = new RabbitMqConnection(factory, options, "publish", timeProvider, Logger);
        ConsumeConnection = new RabbitMqConnection(factory, options, "consume", timeProvider, Logger);
        Publisher = new RabbitMqPublisher(PublishConnection, options, timeProvider, Logger);
        Topology = new RabbitMqTopology(options, Logger);
    }

    public override string SystemName => "rabbitmq";

    public override bool IsInProcess => false;

    public override int MaxPayloadBytes => Options.MaxPayloadBytes;

    protected override string MaxPayloadBytesOption => "RabbitMqTransportOptions.MaxPayloadBytes";

    internal RabbitMqTransportOptions Options { get; }

    internal TimeProvider TimeProvider { get; }

    internal ILogger Logger { get; }

    internal RabbitMqConnection PublishConnection { get; }

    internal RabbitMqConnection ConsumeConnection { get; }

    public override IReadOnlyList<ComponentHealth> GetConnectionHealth() => [PublishConnection.Health, ConsumeConnection.Health];

    internal RabbitMqPublisher Publisher { get; }

    internal RabbitMqTopology Topology { get; }

    /// <summary>Gets the messages handed back uncounted by a plain requeue, whose redelivered flag is not counted when they come again.</summary>
    internal UncountedReturns UncountedReturns { get; } = new();

    public override async ValueTask DeclareQueueAsync(string queue, QueueSettings settings, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(queue);
        ArgumentNullException.ThrowIfNull(settings);
        ArgumentOutOfRangeException.ThrowIfLessThan(settings.Capacity, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(settings.DeadLetterCapacity, 0);
        ThrowIfDisposed();
        var connection = await PublishConnection.GetAsync(cancellationToken).ConfigureAwait(false);
        await Topology.DeclareQueueAsync(connection, queue, settings, cancellationToken).ConfigureAwait(false);
    }

    public override async ValueTask SendAsync(string queue, Envelope envelope, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(queue);
        ThrowIfDisposed();
        ValidateOutgoing(queue, envelope);
        Topology.ValidateQueueName(queue, nameof(queue));
        using var body = Serialize(queue, envelope);
        var properties = AmqpEnvelope.ToProperties(envelope, body.ContentType, Options.PersistentMessages);
        await SendToQueueAsync(queue, properties, body.Memory, Publisher.ChannelFor(envelope.PartitionKey), cancellationToken).ConfigureAwait(false);
    }

    public override async ValueTask<bool> PublishAsync(string topic, Envelope envelope, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(topic);
        ThrowIfDisposed();
        ValidateOutgoing(topic, envelope);
        ValidateTopic(topic);

        using var body = Serialize(topic, envelope);
        var properties = AmqpEnvelope.ToProperties(envelope, body.ContentType, Options.PersistentMessages);
        if (!_topicExchangeReady)
        {
            var connection = await PublishConnection.GetAsync(cancellationToken).ConfigureAwait(false);
            await Topology.EnsureTopicExchangeAsync(connection, cancellationToken).ConfigureAwait(false);
            _topicExchangeReady = true;
        }

        var channel = Publisher.ChannelFor(envelope.PartitionKey);
        var backoff = TimeSpan.FromMilliseconds(5);
        long? firstRefusal = null;
        while (true)
        {
            PublishOutcome outcome;
            try
            {
                outcome = await Publisher.PublishAsync(Topology.TopicExchange, topic, properties, body.Memory, channel, cancellationToken).ConfigureAwait(false);
            }
            catch (InvalidOperationException)
            {
                // The exchange was deleted behind our back: declare it again on the next publish.
                _topicExchangeReady = false;
                throw;
            }

            switch (outcome)
            {
                case PublishOutcome.Accepted:
                    return true;
                case PublishOutcome.Unroutable:
                    return false;
                default:
                    // A consumer group's queue refused it (full, or the broker could not store it): wait and try again,
                    // for as long as a send waits for the broker, then say so.
                    firstRefusal ??= TimeProvider.GetTimestamp();
                    var waited = TimeProvider.GetElapsedTime(firstRefusal.Value);
                    if (waited >= Options.ReconnectTimeout)
                    {
                        throw new QueueFullException(
                            $"RabbitMQ kept refusing the message for topic '{topic}' for {waited:g}: a consumer group's queue bound to it is full "
                            + "(its subscription's Capacity, x-max-length with reject-publish) and its consumers did not make room, or the broker could not store it. "
                            + "The message was not published to any group that refused it; groups that took it have it.");
                    }

                    await Task.Delay(backoff, TimeProvider, cancellationToken).ConfigureAwait(false);
                    backoff = Min(backoff * 2, MaxFullQueueBackoff);
                    break;
            }
        }
    }

    public override async ValueTask<TransportSubscription> SubscribeAsync(SubscriptionRequest request, DeliveryHandler handler, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        ArgumentNullException.ThrowIfNull(handler);
        ArgumentOutOfRangeException.ThrowIfLessThan(request.Concurrency, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(request.Capacity, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(request.DeadLetterCapacity, 0);
        ThrowIfDisposed();
        if (request.Address.Kind == AddressKind.Topic && TopicPattern.Validate(request.Address.Name, allowWildcards: true) is { } problem)
        {
            throw new ArgumentException(problem, nameof(request));
        }

        if (request.Address.Kind == AddressKind.Topic && request.FullMode == QueueFullMode.Reject && !request.Temporary)
        {
            throw new NotSupportedException(
                $"Consumer group '{request.ConsumerGroup}' on topic '{request.Address.Name}' asks for FullMode = Reject, which the RabbitMQ transport cannot honour: "
                + "a publish reaches every group's queue at once, and the broker does not tell the publisher which group refused it. "
                + "Use QueueFullMode.Wait: a publish to a full group waits for space for up to RabbitMqTransportOptions.ReconnectTimeout, then throws QueueFullException.");
        }

        var subscription = new RabbitMqSubscription(this, request, handler);
        _subscriptions[subscription] = true;
        try
        {
            await subscription.StartAsync(cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            _subscriptions.TryRemove(subscription, out _);
            throw;
        }

        return subscription;
    }

    public override async ValueTask<IReadOnlyList<DeadLetterMessage>> PeekDeadLettersAsync(string queue, int maxCount, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(queue);
        ArgumentOutOfRangeException.ThrowIfNegative(maxCount);
        ThrowIfDisposed();
        var letters = new List<DeadLetterMessage>();
        await OnDeadLetterQueueAsync(queue, async (channel, dlq) =>
        {
            ulong last = 0;
            while (letters.Count < maxCount && await channel.BasicGetAsync(dlq, autoAck: false, cancellationToken).ConfigureAwait(false) is { } got)
            {
                letters.Add(ToDeadLetter(queue, got));
                last = got.DeliveryTag;
            }

            if (last != 0)
            {
                // Put them back where they were: a peek removes nothing.
                await channel.BasicNackAsync(last, multiple: true, requeue: true, cancellationToken).ConfigureAwait(false);
            }
        }, cancellationToken).ConfigureAwait(false);
        return letters;
    }

    public override async ValueTask<int> ReplayDeadLettersAsync(string queue, int maxCount, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(queue);
        ArgumentOutOfRangeException.ThrowIfNegative(maxCount);
        ThrowIfDisposed();
        var replayed = 0;
        await OnDeadLetterQueueAsync(queue, async (channel, dlq) =>
        {
            while (replayed < maxCount && await channel.BasicGetAsync(dlq, autoAck: false, cancellationToken).ConfigureAwait(false) is { } got)
            {
                var properties = new BasicProperties(got.BasicProperties);
                properties.Headers = StripDeadLetterHeaders(got.BasicProperties.Headers);
                try
                {
                    await SendToQueueAsync(queue, properties, got.Body.ToArray(), 0, cancellationToken).ConfigureAwait(false);
                }
                catch
                {
                    await channel.BasicNackAsync(got.DeliveryTag, multiple: false, requeue: true, CancellationToken.None).ConfigureAwait(false);
                    throw;
                }

                await channel.BasicAckAsync(got.DeliveryTag, multiple: false, cancellationToken).ConfigureAwait(false);
                replayed++;
            }
        }, cancellationToken).ConfigureAwait(false);
        return replayed;
    }

    public override async ValueTask<int> PurgeDeadLettersAsync(string queue, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(queue);
        ThrowIfDisposed();
        var purged = 0;
        await OnDeadLetterQueueAsync(queue, async (channel, dlq) =>
            purged = (int)await channel.QueuePurgeAsync(dlq, cancellationToken).ConfigureAwait(false), cancellationToken).ConfigureAwait(false);
        return purged;
    }

    public override async ValueTask DisposeAsync()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        var stopping = _subscriptions.Keys.Select(s => s.StopAsync(new CancellationToken(canceled: true))).ToArray();
        await Task.WhenAll(stopping).ConfigureAwait(false);
        await Publisher.DisposeAsync().ConfigureAwait(false);
        await ConsumeConnection.DisposeAsync().ConfigureAwait(false);
        await PublishConnection.DisposeAsync().ConfigureAwait(false);
    }

    internal void Remove(RabbitMqSubscription subscription) => _subscriptions.TryRemove(subscription, out _);

    /// <summary>
    /// Hands a message back for another delivery: straight into the queue's retry queue, or through the delay queue of
    /// the delay, which expires into the retry queue. Neither has a length limit, so neither drops it when the queue
    /// itself is full; the subscription consumes the retry queue beside the queue. A retry's delay is rounded up to the
    /// next delay queue; a deferral's is rounded down (it comes back early, and the consumer path puts it off again for
    /// the rest), so a scheduled message is handled within the shortest delay of its time.
    /// </summary>
    /// <returns><see langword="false"/> when the broker did not take it (the original must then be returned).</returns>
    internal async ValueTask<bool> RedeliverAsync(string queue, Envelope envelope, Settlement settlement, CancellationToken cancellationToken)
    {
        var next = settlement.NextDelivery(envelope);
        if (Options.RedeliveryFault is { } fault && !fault(next))
        {
            return false;
        }

        var delay = settlement.Delay;
        var properties = AmqpEnvelope.ToProperties(next, next.ContentType, Options.PersistentMessages);
        string routingKey;
        TimeSpan retryDelay = default;
        if (delay <= TimeSpan.Zero)
        {
            routingKey = Topology.RetryQueue(queue);
        }
        else
        {
            retryDelay = settlement.IsDeferral ? Topology.DeferDelayFor(delay) : Topology.RetryDelayFor(delay);
            var connection = await PublishConnection.GetAsync(cancellationToken).ConfigureAwait(false);
            await Topology.EnsureDelayQueueAsync(connection, queue, retryDelay, cancellationToken).ConfigureAwait(false);
            routingKey = Topology.DelayQueue(queue, retryDelay);
        }

        var outcome = await Publisher.PublishAsync(string.Empty, routingKey, properties, next.Payload, Publisher.ChannelFor(next.PartitionKey), cancellationToken).ConfigureAwait(false);
        if (outcome == PublishOutcome.Unroutable)
        {
            // Deleted behind our back: declare it again next time; the original goes back to its queue meanwhile.
            if (retryDelay != default)
            {
                Topology.ForgetDelayQueue(queue, retryDelay);
            }
            else
            {
                Topology.Forget(queue);
            }
        }

        return outcome == PublishOutcome.Accepted;
    }

    /// <summary>Writes a message to its queue's dead-letter queue with why it is there.</summary>
    /// <returns><see langword="false"/> when the dead-letter queue did not take it.</returns>
    internal async ValueTask<bool> DeadLetterAsync(string queue, RabbitMqSubscription.Delivery delivery, Settlement settlement, CancellationToken cancellationToken)
    {
        var letter = DeadLetterMessage.Create(delivery.Envelope, queue, settlement, TimeProvider.GetUtcNow());
        var exception = settlement.Exception;
        var reason = letter.Reason;
        BasicProperties properties;
        ReadOnlyMemory<byte> body;
        Guid messageId;
        if (delivery.RawProperties is { } raw)
        {
            // Malformed: dead-lettered as it arrived, with the dead-letter headers added.
            properties = raw;
            var headers = new Dictionary<string, object?>(raw.Headers ?? new Dictionary<string, object?>(), StringComparer.Ordinal);
            foreach (var (key, value) in letter.Envelope.Headers!)
            {
                headers[key] = value;
            }

            properties.Headers = headers;
            body = delivery.RawBody;
            messageId = Guid.Empty;
        }
        else
        {
            properties = AmqpEnvelope.ToProperties(letter.Envelope, delivery.Envelope.ContentType, Options.PersistentMessages);
            body = delivery.Envelope.Payload;
            messageId = delivery.Envelope.MessageId;
        }

        var outcome = await Publisher.PublishAsync(string.Empty, Topology.DeadLetterQueue(queue), properties, body, Publisher.ChannelFor(null), cancellationToken).ConfigureAwait(false);
        if (outcome != PublishOutcome.Accepted)
        {
            return false;
        }

        PatternsTelemetry.DeadLettered.Add(1, PatternsTelemetry.Tags(SystemName, queue));
        RabbitMqLog.DeadLettered(Logger, messageId, queue, reason, exception);
        return true;
    }

    private static ConnectionFactory CreateConnectionFactory(RabbitMqTransportOptions options)
    {
        var factory = new ConnectionFactory
        {
            Uri = options.Uri!,
            AutomaticRecoveryEnabled = true,
            TopologyRecoveryEnabled = true,
            NetworkRecoveryInterval = options.NetworkRecoveryInterval,
            RequestedHeartbeat = options.Heartbeat,
            ConsumerDispatchConcurrency = 1,
            ClientProvidedName = options.ClientName ?? System.Reflection.Assembly.GetEntryAssembly()?.GetName().Name ?? "Patterns",
        };
        options.ConfigureConnectionFactory?.Invoke(factory);
        return factory;
    }

    private static TimeSpan Min(TimeSpan a, TimeSpan b) => a < b ? a : b;

    private static Dictionary<string, object?>? StripDeadLetterHeaders(IDictionary<string, object?>? headers)
    {
        if (headers is null)
        {
            return null;
        }

        var kept = new Dictionary<string, object?>(StringComparer.Ordinal);
        foreach (var (key, value) in headers)
        {
            if (EnvelopeHeaders.IsDeadLetterHeader(key)
                || key is AmqpEnvelope.DeliveryCountHeader or "x-death"
                || key.StartsWith("x-first-death-", StringComparison.Ordinal)
                || key.StartsWith("x-last-death-", StringComparison.Ordinal))
            {
                continue;
            }

            kept[key] = value;
        }

        return kept;
    }

    private DeadLetterMessage ToDeadLetter(string queue, BasicGetResult got)
    {
        var properties = got.BasicProperties;
        var body = got.Body.ToArray();
        if (!AmqpEnvelope.TryRead(properties, body, redelivered: false, out var envelope, out _))
        {
            // Malformed messages are dead-lettered as they arrived; show what there is.
            envelope = new Envelope { MessageType = properties.Type, Payload = body, ContentType = properties.ContentType };
        }

        var headers = properties.Headers;
        string? Header(string name) => headers is not null && headers.TryGetValue(name, out var value) ? AmqpEnvelope.AsString(value) : null;

        var reason = Header(EnvelopeHeaders.DeadLetterReason);
        DateTimeOffset? at = DateTimeOffset.TryParse(Header(EnvelopeHeaders.DeadLetteredAt), CultureInfo.InvariantCulture, DateTimeStyles.RoundtripKind, out var parsed) ? parsed : null;
        if (reason is null && headers is not null && headers.TryGetValue("x-death", out var deaths) && deaths is IList { Count: > 0 } list
            && list[0] is IDictionary<string, object?> death)
        {
            // Dead-lettered by the broker itself (rejected, expired, or pushed out of a full queue).
            reason = $"RabbitMQ dead-lettered it ({(death.TryGetValue("reason", out var why) ? AmqpEnvelope.AsString(why) : "unknown reason")}).";
            if (death.TryGetValue("time", out var time) && time is AmqpTimestamp timestamp)
            {
                at = DateTimeOffset.FromUnixTimeSeconds(timestamp.UnixTime);
            }
        }

        return new DeadLetterMessage(
            envelope,
            Header(EnvelopeHeaders.DeadLetterSource) ?? queue,
            reason ?? "dead-lettered",
            Header(EnvelopeHeaders.ExceptionType),
            Header(EnvelopeHeaders.ExceptionMessage),
            at ?? TimeProvider.GetUtcNow());
    }

    private async ValueTask OnDeadLetterQueueAsync(string queue, Func<IChannel, string, Task> operation, CancellationToken cancellationToken)
    {
        var dlq = Topology.DeadLetterQueue(queue);
        var connection = await PublishConnection.GetAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            await RabbitMqTopology.RunAsync(connection, channel => operation(channel, dlq), cancellationToken).ConfigureAwait(false);
        }
        catch (InvalidOperationException ex) when (ex.InnerException is OperationInterruptedException { ShutdownReason.ReplyCode: 404 })
        {
            throw new QueueNotFoundException(queue, $"Queue '{queue}' does not exist, so it has no dead-letter queue ('{dlq}' is not on the broker).", ex);
        }
    }

    /// <summary>Sends to a queue through the default exchange; a full queue makes the sender wait, or fails in reject mode.</summary>
    private async ValueTask SendToQueueAsync(string queue, BasicProperties properties, ReadOnlyMemory<byte> body, int channel, CancellationToken cancellationToken)
    {
        var routingKey = Topology.Queue(queue);
        var backoff = TimeSpan.FromMilliseconds(5);
        while (true)
        {
            var outcome = await Publisher.PublishAsync(string.Empty, routingKey, properties, body, channel, cancellationToken).ConfigureAwait(false);
            switch (outcome)
            {
                case PublishOutcome.Accepted:
                    return;
                case PublishOutcome.Unroutable:
                    throw new QueueNotFoundException(
                        queue,
                        $"Queue '{queue}' does not exist on RabbitMQ, so the message was not sent: no consumer of it has started "
                        + "(for a request type's queue: no process with a request handler for that type is running), and no queue declaration (AddQueue) created it.");
                default:
                    if (Topology.SettingsOf(queue) is { FullMode: QueueFullMode.Reject } settings)
                    {
                        throw new QueueFullException(queue, settings.Capacity);
                    }

                    // Full (x-max-length with reject-publish): back-pressure, until there is space or the caller gives up.
                    await Task.Delay(backoff, TimeProvider, cancellationToken).ConfigureAwait(false);
                    backoff = Min(backoff * 2, MaxFullQueueBackoff);
                    break;
            }
        }
    }

    private OutgoingBody Serialize(string destination, in Envelope envelope)
    {
        if (!envelope.Payload.IsEmpty)
        {
            return new OutgoingBody(envelope.Payload, envelope.ContentType, null);
        }

        var writer = new PooledBufferWriter();
        try
        {
            _serializer.Serialize(writer, envelope.Body!, envelope.Body!.GetType());
            if (writer.WrittenCount > Options.MaxPayloadBytes)
            {
                throw new MessageTooLargeException(destination, writer.WrittenCount, Options.MaxPayloadBytes, MaxPayloadBytesOption);
            }
        }
        catch
        {
            writer.Dispose();
            throw;
        }

        return new OutgoingBody(writer.WrittenMemory, envelope.ContentType ?? _serializer.ContentType, writer);
    }

    /// <summary>Checks a topic once; publishers usually reuse a few topic strings, so the answer is remembered.</summary>
    private void ValidateTopic(string topic)
    {
        if (ReferenceEquals(topic, _lastValidTopic) || _validTopics.ContainsKey(topic))
        {
            _lastValidTopic = topic;
            return;
        }

        if (TopicPattern.Validate(topic, allowWildcards: false) is { } problem)
        {
            throw new ArgumentException(problem, nameof(topic));
        }

        if (_validTopics.Count >= MaxValidTopicEntries)
        {
            _validTopics.Clear();
        }

        _validTopics[topic] = true;
        _lastValidTopic = topic;
    }

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);

    private readonly struct OutgoingBody(ReadOnlyMemory<byte> memory, string? contentType, PooledBufferWriter? owner) : IDisposable
    {
        public ReadOnlyMemory<byte> Memory { get; } = memory;

        public string? ContentType { get; } = contentType;

        public void Dispose() => owner?.Dispose();
    }
}
