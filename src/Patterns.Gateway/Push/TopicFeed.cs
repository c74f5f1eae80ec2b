using System.Buffers;
using Patterns.Messaging;
using Patterns.Serialization;
using Patterns.Transport;

namespace Patterns.Gateway.Push;

/// <summary>
/// One topic seen by push clients: a single temporary subscription on the transport per gateway process, a replay
/// buffer of recent messages with increasing event ids, and the fan-out to every attached connection.
/// </summary>
internal sealed class TopicFeed(string topic, int replayCount, IMessageSerializer serializer) : IAsyncDisposable
{
    private readonly Lock _lock = new();
    private readonly Queue<PushMessage> _replay = new();
    private readonly SemaphoreSlim _subscribing = new(1, 1);
    private PushConnection[] _connections = [];
    private TransportSubscription? _subscription;
    private TaskCompletionSource _arrived = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private long _lastId;

    public string Topic => topic;

    public long LastId => Interlocked.Read(ref _lastId);

    public int ConnectionCount => Volatile.Read(ref _connections).Length;

    public async ValueTask EnsureSubscribedAsync(MessageTransport transport, CancellationToken cancellationToken)
    {
        if (Volatile.Read(ref _subscription) is not null)
        {
            return;
        }

        await _subscribing.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            _subscription ??= await transport.SubscribeAsync(
                new SubscriptionRequest
                {
                    Address = TransportAddress.Topic(topic),
                    ConsumerGroup = $"gateway.push.{Environment.MachineName}.{Guid.NewGuid():N}",
                    Temporary = true,
                    Capacity = 4096,
                },
                DeliverAsync,
                cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            _subscribing.Release();
        }
    }

    /// <summary>Attaches a connection, first giving it the buffered messages after <paramref name="lastEventId"/>, with no gap and no duplicate.</summary>
    public void Attach(PushConnection connection, long? lastEventId)
    {
        lock (_lock)
        {
            if (lastEventId is { } after)
            {
                foreach (var message in _replay)
                {
                    if (message.Id > after)
                    {
                        connection.Offer(message);
                    }
                }
            }

            _connections = [.. _connections, connection];
        }
    }

    public void Detach(PushConnection connection)
    {
        lock (_lock)
        {
            _connections = Array.FindAll(_connections, c => !ReferenceEquals(c, connection));
        }
    }

    /// <summary>The buffered messages after <paramref name="lastEventId"/> (at most <paramref name="max"/>), and a task that completes when the next message arrives.</summary>
    public (List<PushMessage> Messages, Task Next, bool Gap) After(long lastEventId, int max)
    {
        lock (_lock)
        {
            var messages = new List<PushMessage>();
            var gap = false;
            if (_replay.TryPeek(out var oldest) && oldest.Id > lastEventId + 1)
            {
                gap = true;
            }

            foreach (var message in _replay)
            {
                if (message.Id > lastEventId && messages.Count < max)
                {
                    messages.Add(message);
                }
            }

            return (messages, _arrived.Task, gap);
        }
    }

    private ValueTask<Settlement> DeliverAsync(Envelope envelope, CancellationToken cancellationToken)
    {
        ReadOnlyMemory<byte> data;
        if (!envelope.Payload.IsEmpty)
        {
            data = envelope.Payload.ToArray();
        }
        else if (envelope.Body is { } body)
        {
            var buffer = new ArrayBufferWriter<byte>(256);
            serializer.Serialize(buffer, body, body.GetType());
            data = buffer.WrittenMemory;
        }
        else
        {
            return new ValueTask<Settlement>(Settlement.Ack);
        }

        TaskCompletionSource arrived;
        PushConnection[] connections;
        lock (_lock)
        {
            var message = new PushMessage(++_lastId, topic, data);
            if (replayCount > 0)
            {
                if (_replay.Count == replayCount)
                {
                    _replay.Dequeue();
                }

                _replay.Enqueue(message);
            }

            connections = _connections;
            foreach (var connection in connections)
            {
                connection.Offer(message);
            }

            arrived = _arrived;
            _arrived = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        }

        arrived.TrySetResult();
        return new ValueTask<Settlement>(Settlement.Ack);
    }

    public async ValueTask DisposeAsync()
    {
        if (_subscription is { } subscription)
        {
            await subscription.DisposeAsync().ConfigureAwait(false);
        }

        _subscribing.Dispose();
    }
}
