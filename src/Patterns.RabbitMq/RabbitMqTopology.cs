using System.Collections.Concurrent;
using System.Text;
using Microsoft.Extensions.Logging;
using Patterns.Transport;
using RabbitMQ.Client;
using RabbitMQ.Client.Exceptions;

namespace Patterns.RabbitMq;

/// <summary>
/// Names and declares the broker topology, idempotently. For a queue <c>q</c> (a point-to-point queue, or a
/// subscription's consumer group): the durable queue <c>q</c>, its dead-letter exchange <c>q.dlx</c> (fanout)
/// bound to its dead-letter queue <c>q.dlq</c>, its retry queue <c>q.retry</c> (retries that are due, consumed
/// beside <c>q</c> and never length-limited), and, once a delayed retry needs one, a delay queue per delay
/// <c>q.delay.5s</c> whose messages expire into <c>q.retry</c>. Pub/sub topics are routing keys on one topic
/// exchange; a subscription binds its group's queue with its pattern (<c>*</c> and <c>#</c> mean the same in AMQP).
/// Every name gets <see cref="RabbitMqTransportOptions.NamePrefix"/> in front.
/// </summary>
/// <remarks>
/// Why retries do not expire straight back into <c>q</c>: the broker dead-letters an expired message at most once,
/// and a queue with <c>x-max-length</c> and <c>reject-publish</c> that is full drops it without a trace. RabbitMQ's
/// at-least-once dead-lettering (3.10) needs quorum queues, which cannot be non-durable and would change the type
/// of existing queues. A target without a length limit never refuses, so the expired message always lands.
/// </remarks>
internal sealed class RabbitMqTopology
{
    private const int MaxNameBytes = 255;

    private readonly RabbitMqTransportOptions _options;
    private readonly ILogger _logger;
    private readonly TimeSpan[] _retryDelays;
    private readonly ConcurrentDictionary<string, QueueSettings> _queues = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, string> _groupPatterns = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, Task> _declared = new(StringComparer.Ordinal);

    public RabbitMqTopology(RabbitMqTransportOptions options, ILogger logger)
    {
        _options = options;
        _logger = logger;
        _retryDelays = [.. options.RetryDelays.Order()];
        TopicExchange = options.NamePrefix + options.TopicExchange;
    }

    /// <summary>Gets the broker names of every queue and exchange this transport declared (tests delete them afterwards).</summary>
    public ConcurrentDictionary<string, bool> Created { get; } = new(StringComparer.Ordinal);

    public string TopicExchange { get; }

    public string Queue(string logical) => _options.NamePrefix + logical;

    public string DeadLetterExchange(string logical) => _options.NamePrefix + logical + ".dlx";

    public string DeadLetterQueue(string logical) => _options.NamePrefix + logical + ".dlq";

    /// <summary>The queue of retries that are due: consumed beside the queue itself, with no length limit.</summary>
    public string RetryQueue(string logical) => _options.NamePrefix + logical + ".retry";

    /// <summary>The queue a delayed retry waits in; its messages expire into <see cref="RetryQueue(string)"/>.</summary>
    public string DelayQueue(string logical, TimeSpan delay) => _options.NamePrefix + logical + ".delay." + Format(delay);

    /// <summary>The settings a queue was declared with in this process, if it was.</summary>
    public QueueSettings? SettingsOf(string logical) => _queues.TryGetValue(logical, out var settings) ? settings : null;

    /// <summary>Rounds a requested delay up to the next configured retry delay (capped at the largest).</summary>
    public TimeSpan RetryDelayFor(TimeSpan requested)
    {
        foreach (var delay in _retryDelays)
        {
            if (delay >= requested)
            {
                return delay;
            }
        }

        return _retryDelays[^1];
    }

    /// <summary>Rounds a deferral down to the longest delay that does not pass it (the shortest when it is shorter than all).</summary>
    public TimeSpan DeferDelayFor(TimeSpan requested)
    {
        var chosen = _retryDelays[0];
        foreach (var delay in _retryDelays)
        {
            if (delay <= requested)
            {
                chosen = delay;
            }
        }

        return chosen;
    }

    public static string Format(TimeSpan delay) =>
        delay.Ticks % TimeSpan.TicksPerHour == 0 ? $"{(long)delay.TotalHours}h"
        : delay.Ticks % TimeSpan.TicksPerMinute == 0 ? $"{(long)delay.TotalMinutes}m"
        : delay.Ticks % TimeSpan.TicksPerSecond == 0 ? $"{(long)delay.TotalSeconds}s"
        : $"{(long)delay.TotalMilliseconds}ms";

    /// <summary>Checks a logical queue name before it reaches the broker.</summary>
    public void ValidateQueueName(string logical, string paramName)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(logical, paramName);
        var longest = DelayQueue(logical, TimeSpan.FromMilliseconds(999));
        if (Encoding.UTF8.GetByteCount(longest) > MaxNameBytes)
        {
            throw new ArgumentException(
                $"Queue name '{logical}' is too long for RabbitMQ: with its prefix and suffixes ('{longest}') it is over {MaxNameBytes} bytes.", paramName);
        }

        if (Queue(logical).StartsWith("amq.", StringComparison.Ordinal))
        {
            throw new ArgumentException($"Queue name '{Queue(logical)}' starts with 'amq.', which RabbitMQ reserves for itself.", paramName);
        }
    }

    /// <summary>Declares a point-to-point queue with a capacity: <c>x-max-length</c> with <c>reject-publish</c>, so a full queue refuses publishes.</summary>
    public async ValueTask DeclareQueueAsync(IConnection connection, string logical, QueueSettings settings, CancellationToken cancellationToken)
    {
        ValidateQueueName(logical, nameof(logical));
        var declared = _queues.GetOrAdd(logical, settings);
        try
        {
            await EnsureOnceAsync("queue:" + logical, () => RunAsync(
                connection, channel => DeclareQueueTopologyAsync(channel, logical, declared.Capacity, declared.DeadLetterCapacity, expires: null, cancellationToken), cancellationToken)).ConfigureAwait(false);
        }
        catch
        {
            _queues.TryRemove(new KeyValuePair<string, QueueSettings>(logical, declared));
            throw;
        }
    }

    /// <summary>Declares what a subscription consumes from: its queue (unless declared already), dead-letter queue and, for a topic, the binding.</summary>
    public async ValueTask DeclareSubscriptionAsync(IConnection connection, SubscriptionRequest request, CancellationToken cancellationToken)
    {
        var logical = request.QueueName;
        ValidateQueueName(logical, nameof(request));
        if (request.Address.Kind == AddressKind.Topic)
        {
            var pattern = request.Address.Name;
            var existing = _groupPatterns.GetOrAdd(logical, pattern);
            if (!string.Equals(existing, pattern, StringComparison.Ordinal))
            {
                throw new InvalidOperationException(
                    $"Consumer group '{logical}' already subscribes to topic '{existing}', so it cannot also subscribe to '{pattern}'. Give the subscription its own consumer group.");
            }

            await EnsureTopicExchangeAsync(connection, cancellationToken).ConfigureAwait(false);
            try
            {
                // The group's queue holds at most the subscription's Capacity; a full one refuses publishes, which
                // then wait for space (QueueFullMode.Wait) for a bounded time.
                await RunAsync(connection, channel => DeclareQueueTopologyAsync(
                    channel, logical, request.Capacity, request.DeadLetterCapacity, _options.ConsumerGroupExpiry, cancellationToken), cancellationToken).ConfigureAwait(false);
            }
            catch (InvalidOperationException ex) when (ex.InnerException is OperationInterruptedException { ShutdownReason.ReplyCode: 406 })
            {
                // Declared before with other settings (another capacity, or by an earlier version without one):
                // consume from it as it is.
                RabbitMqLog.QueueExistsWithOtherSettings(_logger, logical, ex.Message);
                await UseAsItIsAsync(connection, logical, _options.ConsumerGroupExpiry, cancellationToken).ConfigureAwait(false);
            }

            await RunAsync(connection, channel => channel.QueueBindAsync(Queue(logical), TopicExchange, pattern, cancellationToken: cancellationToken), cancellationToken).ConfigureAwait(false);
            return;
        }

        if (_queues.TryGetValue(logical, out var settings))
        {
            // Declared in this process (DeclareQueueAsync), with its own settings; declaring it again with the
            // subscription's settings would only conflict.
            await DeclareQueueAsync(connection, logical, settings, cancellationToken).ConfigureAwait(false);
            return;
        }

        try
        {
            await RunAsync(connection, channel => DeclareQueueTopologyAsync(channel, logical, request.Capacity, request.DeadLetterCapacity, expires: null, cancellationToken), cancellationToken).ConfigureAwait(false);

            // Senders in this process honour the subscription's full mode (a process that did not declare the queue waits).
            _queues.TryAdd(logical, new QueueSettings { Capacity = request.Capacity, FullMode = request.FullMode, DeadLetterCapacity = request.DeadLetterCapacity });
        }
        catch (InvalidOperationException ex) when (ex.InnerException is OperationInterruptedException { ShutdownReason.ReplyCode: 406 })
        {
            // Another process declared the queue with its own capacity: consume from it as it is.
            RabbitMqLog.QueueExistsWithOtherSettings(_logger, logical, ex.Message);
            await UseAsItIsAsync(connection, logical, expires: null, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>Declares the delay queue of one delay for one queue, once.</summary>
    public Task EnsureDelayQueueAsync(IConnection connection, string logical, TimeSpan delay, CancellationToken cancellationToken)
    {
        var name = DelayQueue(logical, delay);
        return EnsureOnceAsync(name, () => RunAsync(connection, async channel =>
        {
            await channel.QueueDeclareAsync(name, _options.Durable, exclusive: false, autoDelete: false, new Dictionary<string, object?>
            {
                ["x-message-ttl"] = (long)delay.TotalMilliseconds,
                ["x-dead-letter-exchange"] = string.Empty,
                // Into the retry queue, which has no length limit, rather than the queue itself, which may be full:
                // dead-lettering is at-most-once and a full reject-publish queue would drop the message silently.
                ["x-dead-letter-routing-key"] = RetryQueue(logical),
            }, cancellationToken: cancellationToken).ConfigureAwait(false);
            Created[name] = false;
        }, cancellationToken));
    }

    /// <summary>Forgets what was declared for a queue (it was deleted behind our back), so the next use declares it again.</summary>
    public void Forget(string logical)
    {
        _declared.TryRemove("queue:" + logical, out _);
        foreach (var delay in _retryDelays)
        {
            _declared.TryRemove(DelayQueue(logical, delay), out _);
        }
    }

    /// <summary>
    /// Deletes what a consumer group left on the broker: its queue (only when no consumer uses it), retry, dead-letter and
    /// delay queues and its dead-letter exchange. Returns how many messages were deleted with its queue and retry queue.
    /// </summary>
    public async Task<long> DeleteGroupAsync(IConnection connection, string logical, CancellationToken cancellationToken)
    {
        ValidateQueueName(logical, nameof(logical));
        long deleted = 0;
        try
        {
            await RunAsync(connection, async channel =>
            {
                deleted += await channel.QueueDeleteAsync(Queue(logical), ifUnused: true, ifEmpty: false, cancellationToken: cancellationToken).ConfigureAwait(false);
            }, cancellationToken).ConfigureAwait(false);
        }
        catch (InvalidOperationException ex) when (ex.InnerException is OperationInterruptedException { ShutdownReason.ReplyCode: 406 })
        {
            throw new InvalidOperationException($"Consumer group '{logical}' still has a consumer on queue '{Queue(logical)}': stop it before deleting the group.", ex);
        }

        await RunAsync(connection, async channel =>
        {
            deleted += await channel.QueueDeleteAsync(RetryQueue(logical), ifUnused: false, ifEmpty: false, cancellationToken: cancellationToken).ConfigureAwait(false);
            await channel.QueueDeleteAsync(DeadLetterQueue(logical), ifUnused: false, ifEmpty: false, cancellationToken: cancellationToken).ConfigureAwait(false);
            foreach (var delay in _retryDelays)
            {
                await channel.QueueDeleteAsync(DelayQueue(logical, delay), ifUnused: false, ifEmpty: false, cancellationToken: cancellationToken).ConfigureAwait(false);
            }

            await channel.ExchangeDeleteAsync(DeadLetterExchange(logical), ifUnused: false, cancellationToken: cancellationToken).ConfigureAwait(false);
        }, cancellationToken).ConfigureAwait(false);
        Forget(logical);
        _groupPatterns.TryRemove(logical, out _);
        return deleted;
    }

    /// <summary>Forgets that a delay queue was declared (it was deleted behind our back), so the next retry declares it again.</summary>
    public void ForgetDelayQueue(string logical, TimeSpan delay) => _declared.TryRemove(DelayQueue(logical, delay), out _);

    public Task EnsureTopicExchangeAsync(IConnection connection, CancellationToken cancellationToken) =>
        EnsureOnceAsync(TopicExchange, () => RunAsync(connection, async channel =>
        {
            await channel.ExchangeDeclareAsync(TopicExchange, ExchangeType.Topic, _options.Durable, autoDelete: false, cancellationToken: cancellationToken).ConfigureAwait(false);
            Created[TopicExchange] = true;
        }, cancellationToken));

    /// <summary>Runs broker operations on a short-lived channel, turning a refusal into a clear exception.</summary>
    public static async Task RunAsync(IConnection connection, Func<IChannel, Task> operation, CancellationToken cancellationToken)
    {
        var channel = await connection.CreateChannelAsync(cancellationToken: cancellationToken).ConfigureAwait(false);
        try
        {
            await operation(channel).ConfigureAwait(false);
        }
        catch (OperationInterruptedException ex) when (RabbitMqConnection.IsChannelError(ex.ShutdownReason))
        {
            var hint = ex.ShutdownReason?.ReplyCode == 406
                ? " The queue or exchange exists with other settings: delete it, or declare it with the same settings."
                : string.Empty;
            throw new InvalidOperationException($"RabbitMQ refused the operation: {ex.ShutdownReason?.ReplyText}.{hint}", ex);
        }
        finally
        {
            await RabbitMqPublisher.CloseQuietlyAsync(channel).ConfigureAwait(false);
        }
    }

    /// <summary>Checks that a queue declared elsewhere with other settings is there, and makes sure its retry queue is.</summary>
    private async Task UseAsItIsAsync(IConnection connection, string logical, TimeSpan? expires, CancellationToken cancellationToken)
    {
        await RunAsync(connection, async channel =>
        {
            await channel.QueueDeclarePassiveAsync(Queue(logical), cancellationToken).ConfigureAwait(false);
            await channel.QueueDeclarePassiveAsync(DeadLetterQueue(logical), cancellationToken).ConfigureAwait(false);
        }, cancellationToken).ConfigureAwait(false);
        try
        {
            // Declared by an earlier version, the queue has no retry queue yet; the consumer needs one.
            await RunAsync(connection, async channel =>
            {
                var retry = RetryQueue(logical);
                await channel.QueueDeclareAsync(retry, _options.Durable, exclusive: false, autoDelete: false, QueueArguments(DeadLetterExchange(logical), capacity: null, expires), cancellationToken: cancellationToken).ConfigureAwait(false);
                Created[retry] = false;
            }, cancellationToken).ConfigureAwait(false);
        }
        catch (InvalidOperationException ex) when (ex.InnerException is OperationInterruptedException { ShutdownReason.ReplyCode: 406 })
        {
            await RunAsync(connection, channel => channel.QueueDeclarePassiveAsync(RetryQueue(logical), cancellationToken), cancellationToken).ConfigureAwait(false);
        }
    }

    private async Task DeclareQueueTopologyAsync(IChannel channel, string logical, int? capacity, int deadLetterCapacity, TimeSpan? expires, CancellationToken cancellationToken)
    {
        var dlx = DeadLetterExchange(logical);
        var dlq = DeadLetterQueue(logical);
        await channel.ExchangeDeclareAsync(dlx, ExchangeType.Fanout, _options.Durable, autoDelete: false, cancellationToken: cancellationToken).ConfigureAwait(false);
        Created[dlx] = true;
        await channel.QueueDeclareAsync(dlq, _options.Durable, exclusive: false, autoDelete: false, new Dictionary<string, object?>
        {
            // The oldest dead letters are dropped past the capacity, as in the in-memory transport.
            ["x-max-length"] = deadLetterCapacity,
        }, cancellationToken: cancellationToken).ConfigureAwait(false);
        Created[dlq] = false;
        await channel.QueueBindAsync(dlq, dlx, string.Empty, cancellationToken: cancellationToken).ConfigureAwait(false);

        // Retries that are due: no length limit, so that a delay queue's expired messages always land (see the remarks).
        var retry = RetryQueue(logical);
        await channel.QueueDeclareAsync(retry, _options.Durable, exclusive: false, autoDelete: false, QueueArguments(dlx, capacity: null, expires), cancellationToken: cancellationToken).ConfigureAwait(false);
        Created[retry] = false;

        var arguments = QueueArguments(dlx, capacity, expires);
        var queue = Queue(logical);
        await channel.QueueDeclareAsync(queue, _options.Durable, exclusive: false, autoDelete: false, arguments, cancellationToken: cancellationToken).ConfigureAwait(false);
        Created[queue] = false;
    }

    private Dictionary<string, object?> QueueArguments(string dlx, int? capacity, TimeSpan? expires)
    {
        var arguments = new Dictionary<string, object?>
        {
            ["x-dead-letter-exchange"] = dlx,
        };
        if (capacity is { } max)
        {
            arguments["x-max-length"] = max;
            arguments["x-overflow"] = "reject-publish";
        }

        if (_options.SingleActiveConsumer)
        {
            arguments["x-single-active-consumer"] = true;
        }

        if (expires is { } unused)
        {
            // The broker deletes the queue once it has had no consumer for this long (and nobody declared it again).
            arguments["x-expires"] = (long)unused.TotalMilliseconds;
        }

        return arguments;
    }

    private async Task EnsureOnceAsync(string key, Func<Task> declare)
    {
        var task = _declared.GetOrAdd(key, _ => declare());
        try
        {
            await task.ConfigureAwait(false);
        }
        catch
        {
            // Let the next caller try again.
            _declared.TryRemove(new KeyValuePair<string, Task>(key, task));
            throw;
        }
    }
}
