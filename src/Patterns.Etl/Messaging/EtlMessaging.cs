using System.Runtime.CompilerServices;
using Patterns.EventSourcing;
using Patterns.PubSub;
using Patterns.Queues;
using Patterns.Storage;
using Patterns.Streaming;

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
    /// <summary>
    /// Starts a flow at a queue on the configured transport (any transport). The run goes on until it is stopped (its
    /// token cancelled); each message is acknowledged once the stream has taken it, so the flow is at-least-once up to
    /// the stream's buffer: a queue source has no bookmark.
    /// </summary>
    /// <typeparam name="T">The message type.</typeparam>
    /// <param name="services">The application's services (with Patterns added).</param>
    /// <param name="queue">The queue.</param>
    /// <returns>The flow.</returns>
    public static EtlFlow<T> FromQueue<T>(IServiceProvider services, string queue)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentException.ThrowIfNullOrWhiteSpace(queue);
        return new EtlFlow<T>("queue:" + queue, (run, options) =>
        {
            run.Source = new EtlSourceContext(run, EtlBookmark.Start, "queue:" + queue);
            return DataStream.FromQueue<T>(services, queue, options).Select(m => Count(run, m));
        }, resumable: false, incremental: true);
    }

    /// <summary>Starts a flow at a pub/sub subscription on the configured transport; see <see cref="FromQueue{T}"/>.</summary>
    /// <typeparam name="T">The message type.</typeparam>
    /// <param name="services">The application's services.</param>
    /// <param name="topicPattern">The topic or pattern.</param>
    /// <param name="consumerGroup">The consumer group.</param>
    /// <returns>The flow.</returns>
    public static EtlFlow<T> FromSubscription<T>(IServiceProvider services, string topicPattern, string consumerGroup)
    {
        ArgumentNullException.ThrowIfNull(services);
        return new EtlFlow<T>("topic:" + topicPattern, (run, options) =>
        {
            run.Source = new EtlSourceContext(run, EtlBookmark.Start, "topic:" + topicPattern);
            return DataStream.FromSubscription<T>(services, topicPattern, consumerGroup, options).Select(m => Count(run, m));
        }, resumable: false, incremental: true);
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

    private static T Count<T>(EtlRun run, T message)
    {
        run.RowsRead++;
        run.Source.Offset++;
        return message;
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
