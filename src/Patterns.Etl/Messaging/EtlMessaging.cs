using System.Runtime.CompilerServices;
using Patterns.EventSourcing;
using Patterns.PubSub;
using Patterns.Queues;
using Patterns.Storage;
using Patterns.Transport;

namespace Patterns.Etl;

/// <summary>Sources and sinks on the rest of Patterns: the event store's log, queues and topics on any transport.</summary>
public static class EtlSources
{
    /// <summary>
    /// The event store's global log as rows, from a bookmark: each run reads the events after the position committed with
    /// the last loaded batch (the bookmark's offset is the event's log position). Incremental: a later run loads what was
    /// appended since.
    /// </summary>
    /// <param name="store">The event store.</param>
    /// <param name="filter">Which events (types, stream prefix), or <see langword="null"/> for all.</param>
    /// <returns>The source.</returns>
    public static EtlSource<RecordedEvent> EventLog(IEventStore store, EventFilter? filter = null)
    {
        ArgumentNullException.ThrowIfNull(store);
        return new EventLogSource(store, filter);
    }

    private sealed class EventLogSource(IEventStore store, EventFilter? filter) : EtlSource<RecordedEvent>
    {
        public override string Name => "event-log";

        public override bool CanResume => true;

        public override bool Incremental => true;

        public override async IAsyncEnumerable<RecordedEvent> ReadAsync(EtlSourceContext context, [EnumeratorCancellation] CancellationToken cancellationToken)
        {
            var head = await store.GetHeadPositionAsync(cancellationToken).ConfigureAwait(false);
            await foreach (var recorded in store.ReadAllAsync(context.Resume.Offset, filter, long.MaxValue, cancellationToken).ConfigureAwait(false))
            {
                if (recorded.Position > head)
                {
                    // What was appended after the run started waits for the next run.
                    yield break;
                }

                context.Offset = recorded.Position;
                context.Line = recorded.Position;
                yield return recorded;
            }
        }
    }
}

/// <summary>Flows that start at a queue or a subscription on the configured transport.</summary>
public static class EtlTransport
{
    /// <summary>The default of <c>maxUnacknowledged</c>: the most messages a run holds before the batches that include them commit.</summary>
    public const int DefaultMaxUnacknowledged = 2_048;

    /// <summary>The default of <c>maxDeliveries</c>: a message delivered this many times is dead-lettered when a batch that includes it fails.</summary>
    public const int DefaultMaxDeliveries = 5;

    /// <summary>
    /// Starts a flow at a queue on the configured transport (any transport). The run goes on until it is stopped (its
    /// token cancelled). Each message is acknowledged only once the batch that includes it has committed at the sink
    /// (a message that was filtered out or quarantined, once the batch after it has): a run that fails or is killed
    /// before then leaves it to be delivered again. A queue source has no bookmark; with a sink that merges on a key
    /// a message delivered again after its batch committed (a crash between the commit and the acknowledgement) changes
    /// nothing, so the load is effectively once.
    /// </summary>
    /// <typeparam name="T">The message type.</typeparam>
    /// <param name="services">The application's services (with Patterns added).</param>
    /// <param name="queue">The queue.</param>
    /// <param name="maxUnacknowledged">The most messages held unacknowledged (the transport's prefetch); batches hold at most half of it, and an idle source loads its open batch after 100 ms.</param>
    /// <param name="maxDeliveries">A message a failed run blames (every message of a batch the sink failed; only the message whose row a stage or a multicast branch failed on, or that is too big for a batch of its own, or whose rows alone pass a DistinctBy's budget; none for a failure no row caused (a join's build side or a Lookup's dimension that cannot be read, a stage's memory budget), after which the messages before it are committed) is dead-lettered once it has been delivered this many times, with a reason naming what failed, the message and the error; otherwise it is handed back. Any other hand-back (a stop, another message's failure) counts no delivery.</param>
    /// <returns>The flow.</returns>
    public static EtlFlow<T> FromQueue<T>(IServiceProvider services, string queue, int maxUnacknowledged = DefaultMaxUnacknowledged, int maxDeliveries = DefaultMaxDeliveries)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentException.ThrowIfNullOrWhiteSpace(queue);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxUnacknowledged, 2);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxDeliveries, 1);
        return Etl.From(new TransportSource<T>(services, TransportAddress.Queue(queue), queue, "queue:" + queue, maxUnacknowledged, maxDeliveries));
    }

    /// <summary>Starts a flow at a pub/sub subscription on the configured transport; see <see cref="FromQueue{T}"/> for acknowledgements.</summary>
    /// <typeparam name="T">The message type.</typeparam>
    /// <param name="services">The application's services.</param>
    /// <param name="topicPattern">The topic or pattern.</param>
    /// <param name="consumerGroup">The consumer group.</param>
    /// <param name="maxUnacknowledged">The most messages held unacknowledged; see <see cref="FromQueue{T}"/>.</param>
    /// <param name="maxDeliveries">How many runs may fail on a batch that includes a message before it is dead-lettered; see <see cref="FromQueue{T}"/>.</param>
    /// <returns>The flow.</returns>
    public static EtlFlow<T> FromSubscription<T>(IServiceProvider services, string topicPattern, string consumerGroup, int maxUnacknowledged = DefaultMaxUnacknowledged, int maxDeliveries = DefaultMaxDeliveries)
    {
        ArgumentNullException.ThrowIfNull(services);
        if (TopicPattern.Validate(topicPattern, allowWildcards: true) is { } problem)
        {
            throw new ArgumentException(problem, nameof(topicPattern));
        }

        ArgumentException.ThrowIfNullOrWhiteSpace(consumerGroup);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxUnacknowledged, 2);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxDeliveries, 1);
        return Etl.From(new TransportSource<T>(services, TransportAddress.Topic(topicPattern), consumerGroup, "topic:" + topicPattern, maxUnacknowledged, maxDeliveries));
    }

    /// <summary>A sink that sends each row to a queue on the configured transport.</summary>
    /// <typeparam name="T">The message type.</typeparam>
    /// <param name="sender">The queue sender.</param>
    /// <param name="queue">The queue.</param>
    /// <returns>The sink.</returns>
    public static EtlSink<T> ToQueue<T>(IQueueSender sender, string queue)
        where T : notnull
    {
        ArgumentNullException.ThrowIfNull(sender);
        ArgumentException.ThrowIfNullOrWhiteSpace(queue);
        return new MessageSink<T>("queue:" + queue, (row, ct) => sender.SendAsync(queue, row, ct));
    }

    /// <summary>A sink that publishes each row to a topic on the configured transport.</summary>
    /// <typeparam name="T">The message type.</typeparam>
    /// <param name="publisher">The publisher.</param>
    /// <param name="topic">The topic; the type's name when <see langword="null"/>.</param>
    /// <returns>The sink.</returns>
    public static EtlSink<T> ToTopic<T>(IPublisher publisher, string? topic = null)
        where T : notnull
    {
        ArgumentNullException.ThrowIfNull(publisher);
        return new MessageSink<T>("topic:" + (topic ?? typeof(T).Name), (row, ct) => publisher.PublishAsync(topic, row, default(Messaging.MessageOptions), ct));
    }

    private sealed class MessageSink<T>(string name, Func<T, CancellationToken, ValueTask> send) : EtlSink<T>
    {
        public override string Name => name;

        public override int PreferredBatchSize => 256;

        public override ValueTask<EtlSinkWriter<T>> OpenAsync(EtlSinkContext context, CancellationToken cancellationToken) => new(new Writer(send));

        private sealed class Writer(Func<T, CancellationToken, ValueTask> send) : EtlSinkWriter<T>
        {
            public override async ValueTask<EtlLoadCounts> WriteAsync(ReadOnlyMemory<T> rows, EtlCommit commit, CancellationToken cancellationToken)
            {
                for (var i = 0; i < rows.Length; i++)
                {
                    await send(rows.Span[i], cancellationToken).ConfigureAwait(false);
                }

                return new EtlLoadCounts(rows.Length, 0, 0);
            }

            public override ValueTask<EtlLoadCounts> CompleteAsync(EtlCommit commit, CancellationToken cancellationToken) => default;
        }
    }
}
