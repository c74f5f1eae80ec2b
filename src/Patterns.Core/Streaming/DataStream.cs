using System.Threading.Channels;
using Microsoft.Extensions.Options;
using Patterns.Batching;
using Patterns.Messaging;
using Patterns.PubSub;
using Patterns.Queues;
using Patterns.Transport;

namespace Patterns.Streaming;

/// <summary>Starts stream pipelines: from an in-memory sequence, an <see cref="IAsyncEnumerable{T}"/>, a channel, a queue or a pub/sub subscription.</summary>
public static class DataStream
{
    /// <summary>A stream over an in-memory sequence, read synchronously (the fastest source).</summary>
    /// <typeparam name="T">The element type.</typeparam>
    /// <param name="source">The elements.</param>
    /// <param name="options">The pipeline's options.</param>
    /// <returns>The stream.</returns>
    public static DataStream<T> From<T>(IEnumerable<T> source, StreamOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(source);
        return new SourceStream<T>(Validated(options), run => new EnumerableDriver<T>(run, source));
    }

    /// <summary>A stream over an async sequence, pulled one element at a time, so the source never runs ahead of the pipeline.</summary>
    /// <typeparam name="T">The element type.</typeparam>
    /// <param name="source">The elements; enumerated with the pipeline's stop token.</param>
    /// <param name="options">The pipeline's options.</param>
    /// <returns>The stream.</returns>
    public static DataStream<T> From<T>(IAsyncEnumerable<T> source, StreamOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(source);
        return new SourceStream<T>(Validated(options), run => new AsyncEnumerableDriver<T>(run, source));
    }

    /// <summary>A stream over a channel, read in synchronous runs while elements are available. The stream ends when the channel completes.</summary>
    /// <typeparam name="T">The element type.</typeparam>
    /// <param name="source">The channel's reader. On a graceful stop, what is still in the channel stays there.</param>
    /// <param name="options">The pipeline's options.</param>
    /// <returns>The stream.</returns>
    public static DataStream<T> From<T>(ChannelReader<T> source, StreamOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(source);
        return new SourceStream<T>(Validated(options), run => new ChannelDriver<T>(run, source, honorStop: true));
    }

    /// <summary>
    /// A stream over a pub/sub subscription on the configured transport. Each message is acknowledged once the pipeline
    /// has taken it into its bounded input buffer (<see cref="StreamOptions.BufferCapacity"/>); a full buffer holds the
    /// transport back. Messages that cannot be read as <typeparamref name="T"/> are dead-lettered by the transport.
    /// </summary>
    /// <typeparam name="T">The message type.</typeparam>
    /// <param name="services">The application's services (with Patterns added).</param>
    /// <param name="topicPattern">The topic or pattern (<c>*</c>, <c>#</c>).</param>
    /// <param name="consumerGroup">The subscription's consumer group; it also names its dead-letter queue.</param>
    /// <param name="options">The pipeline's options.</param>
    /// <returns>The stream.</returns>
    public static DataStream<T> FromSubscription<T>(IServiceProvider services, string topicPattern, string consumerGroup, StreamOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(services);
        if (TopicPattern.Validate(topicPattern, allowWildcards: true) is { } problem)
        {
            throw new ArgumentException(problem, nameof(topicPattern));
        }

        ArgumentException.ThrowIfNullOrWhiteSpace(consumerGroup);
        return new SourceStream<T>(Validated(options), run => new TransportSourceDriver<T>(run, services, TransportAddress.Topic(topicPattern), consumerGroup));
    }

    /// <summary>A stream over a queue on the configured transport; see <see cref="FromSubscription{T}"/> for acknowledgement and back-pressure.</summary>
    /// <typeparam name="T">The message type.</typeparam>
    /// <param name="services">The application's services (with Patterns added).</param>
    /// <param name="queue">The queue.</param>
    /// <param name="options">The pipeline's options.</param>
    /// <returns>The stream.</returns>
    public static DataStream<T> FromQueue<T>(IServiceProvider services, string queue, StreamOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentException.ThrowIfNullOrWhiteSpace(queue);
        return new SourceStream<T>(Validated(options), run => new TransportSourceDriver<T>(run, services, TransportAddress.Queue(queue), queue));
    }

    private static StreamOptions Validated(StreamOptions? options)
    {
        options ??= new StreamOptions();
        var result = new StreamOptionsValidator().Validate(null, options);
        var errors = result.Failed ? new List<string>(result.Failures ?? []) : [];
        if (options.DefaultFailurePolicy is null)
        {
            errors.Add("StreamOptions.DefaultFailurePolicy must not be null.");
        }

        if (options.SnapshotInterval is { } interval && interval <= TimeSpan.Zero)
        {
            errors.Add($"StreamOptions.SnapshotInterval must be positive (was {interval}).");
        }

        if (options.Name is { } name && string.IsNullOrWhiteSpace(name))
        {
            errors.Add("StreamOptions.Name must not be blank.");
        }

        return errors.Count == 0 ? options : throw new ArgumentException(string.Join(Environment.NewLine, errors), nameof(options));
    }
}

[OptionsValidator]
internal sealed partial class StreamOptionsValidator : IValidateOptions<StreamOptions>;

/// <summary>Event-time settings carried to the window stages.</summary>
internal sealed record EventTimeSettings<T>(Func<T, DateTimeOffset> Timestamp, TimeSpan MaxOutOfOrderness);

/// <summary>
/// An immutable description of a stream: a source and the operators applied to it. Nothing runs until a sink
/// (<see cref="To(Func{T, CancellationToken, ValueTask}, FailurePolicy?)"/> and the other <c>To</c> methods) makes a
/// <see cref="StreamPipeline"/> and it is run.
/// </summary>
/// <typeparam name="T">The element type.</typeparam>
/// <remarks>
/// <para>
/// Operators between two concurrency boundaries run synchronously, one element at a time, on the pipeline's own task;
/// <see cref="SelectAsync"/> and <see cref="PartitionBy"/> add concurrency. Every buffer between concurrent parts is
/// bounded (<see cref="StreamOptions.BufferCapacity"/>), so a slow sink slows the source instead of filling memory.
/// </para>
/// <para>
/// Each operator takes an optional <see cref="FailurePolicy"/> for exceptions of its user code: stop (the default),
/// resume (skip the element and record it in the dead-letter output), or retry with Polly.
/// </para>
/// </remarks>
public abstract class DataStream<T>
{
    private protected DataStream(StreamOptions options, int depth, EventTimeSettings<T>? eventTime)
    {
        Options = options;
        Depth = depth;
        EventTime = eventTime;
    }

    internal StreamOptions Options { get; }

    internal int Depth { get; }

    internal EventTimeSettings<T>? EventTime { get; }

    /// <summary>Keeps the elements that satisfy <paramref name="predicate"/>.</summary>
    /// <param name="predicate">The test.</param>
    /// <param name="onError">What to do when <paramref name="predicate"/> throws.</param>
    /// <param name="name">The stage's name in dead letters, logs and snapshots; unique in the pipeline. Without it, the name is the operator's kind and position (for example <c>Where@1</c>).</param>
    /// <returns>The filtered stream (with the same event time).</returns>
    public DataStream<T> Where(Func<T, bool> predicate, FailurePolicy? onError = null, string? name = null)
    {
        ArgumentNullException.ThrowIfNull(predicate);
        return new OperatorStream<T, T>(this, "Where", StageNames.Validate(name), (next, context, id) => new WhereStage<T>(next, predicate, new StageGuard(context, id, onError)), EventTime);
    }

    /// <summary>Maps each element.</summary>
    /// <typeparam name="TOut">The result type.</typeparam>
    /// <param name="selector">The map.</param>
    /// <param name="onError">What to do when <paramref name="selector"/> throws.</param>
    /// <param name="name">The stage's name in dead letters, logs and snapshots; unique in the pipeline. Without it, the name is the operator's kind and position (for example <c>Select@1</c>).</param>
    /// <returns>The mapped stream (call <see cref="WithEventTime"/> again to window it on event time).</returns>
    public DataStream<TOut> Select<TOut>(Func<T, TOut> selector, FailurePolicy? onError = null, string? name = null)
    {
        ArgumentNullException.ThrowIfNull(selector);
        return new OperatorStream<T, TOut>(this, "Select", StageNames.Validate(name), (next, context, id) => new SelectStage<T, TOut>(next, selector, new StageGuard(context, id, onError)), null);
    }

    /// <summary>Maps each element to any number of elements.</summary>
    /// <typeparam name="TOut">The result type.</typeparam>
    /// <param name="selector">The map.</param>
    /// <param name="onError">What to do when <paramref name="selector"/> (or enumerating its result) throws. An element is retried only if none of its results went downstream yet.</param>
    /// <param name="name">The stage's name in dead letters, logs and snapshots; unique in the pipeline. Without it, the name is the operator's kind and position (for example <c>SelectMany@1</c>).</param>
    /// <returns>The flattened stream.</returns>
    public DataStream<TOut> SelectMany<TOut>(Func<T, IEnumerable<TOut>> selector, FailurePolicy? onError = null, string? name = null)
    {
        ArgumentNullException.ThrowIfNull(selector);
        return new OperatorStream<T, TOut>(this, "SelectMany", StageNames.Validate(name), (next, context, id) => new SelectManyStage<T, TOut>(next, selector, new StageGuard(context, id, onError)), null);
    }

    /// <summary>
    /// Maps each element asynchronously with at most <paramref name="maxParallelism"/> calls running at once; the stage
    /// waits (and so holds back the source) while that many are running.
    /// </summary>
    /// <typeparam name="TOut">The result type.</typeparam>
    /// <param name="selector">The async map; started on the pipeline's task (wrap CPU-bound work in <see cref="Task.Run(Func{Task})"/>).</param>
    /// <param name="maxParallelism">How many calls may run at once.</param>
    /// <param name="ordered"><see langword="true"/> to emit results in input order; <see langword="false"/> to emit them as they complete.</param>
    /// <param name="onError">What to do when <paramref name="selector"/> fails.</param>
    /// <param name="name">The stage's name in dead letters, logs and snapshots; unique in the pipeline. Without it, the name is the operator's kind and position (for example <c>SelectAsync@1</c>).</param>
    /// <returns>The mapped stream.</returns>
    public DataStream<TOut> SelectAsync<TOut>(Func<T, CancellationToken, ValueTask<TOut>> selector, int maxParallelism = 1, bool ordered = true, FailurePolicy? onError = null, string? name = null)
    {
        ArgumentNullException.ThrowIfNull(selector);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxParallelism, 1);
        return new OperatorStream<T, TOut>(
            this,
            "SelectAsync",
            StageNames.Validate(name),
            (next, context, id) => ordered
                ? new OrderedAsyncMapStage<T, TOut>(next, selector, maxParallelism, new StageGuard(context, id, onError))
                : new UnorderedAsyncMapStage<T, TOut>(next, selector, maxParallelism, new StageGuard(context, id, onError)),
            null);
    }

    /// <summary>
    /// Splits the stream by key into <paramref name="partitions"/> partitions that run in parallel. Everything after this
    /// call runs once per partition (each with its own window state); one key always goes to the same partition, so
    /// per-key order holds. The partitions meet again, through one bounded buffer, in front of the sink.
    /// </summary>
    /// <typeparam name="TKey">The key type.</typeparam>
    /// <param name="keySelector">Gets an element's key.</param>
    /// <param name="partitions">How many partitions.</param>
    /// <param name="onError">What to do when <paramref name="keySelector"/> throws.</param>
    /// <param name="name">The stage's name in dead letters, logs and snapshots; unique in the pipeline. Without it, the name is the operator's kind and position (for example <c>PartitionBy@1</c>).</param>
    /// <returns>The partitioned stream (with the same event time).</returns>
    /// <remarks>
    /// A key's partition is its <see cref="PartitionHash"/>, which is the same in every process for string and
    /// primitive keys, so a restarted pipeline finds each such key's window state in the partition that saved it.
    /// </remarks>
    public DataStream<T> PartitionBy<TKey>(Func<T, TKey> keySelector, int partitions, FailurePolicy? onError = null, string? name = null)
    {
        ArgumentNullException.ThrowIfNull(keySelector);
        ArgumentOutOfRangeException.ThrowIfLessThan(partitions, 1);
        return new PartitionStream<T, TKey>(this, keySelector, partitions, onError, StageNames.Validate(name));
    }

    /// <summary>
    /// Windows after this call use event time: <paramref name="timestamp"/> gives each element's time, and the watermark
    /// (the largest time seen minus <paramref name="maxOutOfOrderness"/>) decides when a window is complete.
    /// </summary>
    /// <param name="timestamp">Gets an element's event time.</param>
    /// <param name="maxOutOfOrderness">How far behind the latest element an element may be and still count as on time.</param>
    /// <returns>The stream, with event time.</returns>
    public DataStream<T> WithEventTime(Func<T, DateTimeOffset> timestamp, TimeSpan maxOutOfOrderness)
    {
        ArgumentNullException.ThrowIfNull(timestamp);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxOutOfOrderness, TimeSpan.Zero);
        return new OperatorStream<T, T>(this, null, null, static (next, _, _) => next, new EventTimeSettings<T>(timestamp, maxOutOfOrderness));
    }

    /// <summary>Groups the stream by key, for keyed windows and aggregations.</summary>
    /// <typeparam name="TKey">The key type.</typeparam>
    /// <param name="keySelector">Gets an element's key.</param>
    /// <returns>The keyed stream.</returns>
    public KeyedStream<T, TKey> KeyBy<TKey>(Func<T, TKey> keySelector)
        where TKey : notnull
    {
        ArgumentNullException.ThrowIfNull(keySelector);
        return new KeyedStream<T, TKey>(this, keySelector);
    }

    /// <summary>Ends the stream in a delegate, called once per element and awaited before the next.</summary>
    /// <param name="sink">The sink.</param>
    /// <param name="onError">What to do when <paramref name="sink"/> fails.</param>
    /// <returns>The runnable pipeline.</returns>
    public StreamPipeline To(Func<T, CancellationToken, ValueTask> sink, FailurePolicy? onError = null)
    {
        ArgumentNullException.ThrowIfNull(sink);
        return Sink(context => new SinkStage<T>(sink, null, new StageGuard(context, context.StageId(StageNames.Of(null, "Sink", Depth + 1)), onError)));
    }

    /// <summary>Ends the stream in a synchronous delegate.</summary>
    /// <param name="sink">The sink.</param>
    /// <param name="onError">What to do when <paramref name="sink"/> throws.</param>
    /// <returns>The runnable pipeline.</returns>
    public StreamPipeline To(Action<T> sink, FailurePolicy? onError = null)
    {
        ArgumentNullException.ThrowIfNull(sink);
        return To(
            (item, _) =>
            {
                sink(item);
                return default;
            },
            onError);
    }

    /// <summary>Ends the stream in a channel; a full bounded channel holds the pipeline back.</summary>
    /// <param name="writer">The channel's writer.</param>
    /// <param name="complete">Whether to complete the channel when the input is exhausted.</param>
    /// <returns>The runnable pipeline.</returns>
    public StreamPipeline To(ChannelWriter<T> writer, bool complete = true)
    {
        ArgumentNullException.ThrowIfNull(writer);
        return Sink(context => new SinkStage<T>(
            (item, ct) => writer.TryWrite(item) ? default : writer.WriteAsync(item, ct),
            (final, _) =>
            {
                if (final && complete)
                {
                    writer.TryComplete();
                }

                return default;
            },
            new StageGuard(context, context.StageId(StageNames.Of(null, "Channel", Depth + 1)), FailurePolicy.Stop)));
    }

    /// <summary>Ends the stream in a batcher: each element is added (waiting while the batcher is full), and the batcher is flushed when the pipeline ends.</summary>
    /// <param name="batcher">The batcher; the pipeline does not complete it.</param>
    /// <returns>The runnable pipeline.</returns>
    public StreamPipeline To(Batcher<T> batcher)
    {
        ArgumentNullException.ThrowIfNull(batcher);
        return Sink(context => new SinkStage<T>(
            (item, ct) =>
            {
                var adding = batcher.AddAsync(item, ct);
                return adding.IsCompletedSuccessfully ? default : AwaitAddAsync(adding);
            },
            (_, ct) => new ValueTask(batcher.FlushAsync(ct)),
            new StageGuard(context, context.StageId(StageNames.Of(null, "Batcher", Depth + 1)), FailurePolicy.Stop)));

        static async ValueTask AwaitAddAsync(ValueTask<bool> adding) => await adding.ConfigureAwait(false);
    }

    /// <summary>Ends the stream by publishing each element to a topic on the configured transport.</summary>
    /// <param name="publisher">The publisher.</param>
    /// <param name="topic">The topic; the element type's name when <see langword="null"/>.</param>
    /// <param name="onError">What to do when a publish fails.</param>
    /// <returns>The runnable pipeline.</returns>
    public StreamPipeline PublishTo(IPublisher publisher, string? topic = null, FailurePolicy? onError = null)
    {
        ArgumentNullException.ThrowIfNull(publisher);
        return To((item, ct) => publisher.PublishAsync<object>(topic, item!, default(MessageOptions), ct), onError);
    }

    /// <summary>Ends the stream by sending each element to a queue on the configured transport.</summary>
    /// <param name="sender">The queue sender.</param>
    /// <param name="queue">The queue.</param>
    /// <param name="onError">What to do when a send fails.</param>
    /// <returns>The runnable pipeline.</returns>
    public StreamPipeline SendTo(IQueueSender sender, string queue, FailurePolicy? onError = null)
    {
        ArgumentNullException.ThrowIfNull(sender);
        ArgumentException.ThrowIfNullOrWhiteSpace(queue);
        return To((item, ct) => sender.SendAsync<object>(queue, item!, ct), onError);
    }

    /// <summary>
    /// Ends the stream in read-model documents of the event store, written exactly once: the results are committed in
    /// the same unit of work as the snapshot whose state includes them (and that acknowledges a transport source's
    /// input), so after a crash the pipeline resumes from that snapshot and never writes a result twice nor loses one.
    /// Needs a snapshot store on a store with units of work (<see cref="StoreStreamSnapshotStore"/>, the default on the
    /// host when <c>AddEventSourcing</c> chose such a store). Results are written when a snapshot commits: periodically
    /// (<see cref="StreamOptions.SnapshotInterval"/>) and when the pipeline stops or its input ends.
    /// </summary>
    /// <param name="collection">The document collection.</param>
    /// <param name="documentId">The id of each result's document; a later result with the same id replaces it (a window update).</param>
    /// <returns>The runnable pipeline.</returns>
    public StreamPipeline ToDocuments(string collection, Func<T, string> documentId)
    {
        ArgumentException.ThrowIfNullOrEmpty(collection);
        ArgumentNullException.ThrowIfNull(documentId);
        return Sink(context =>
        {
            var id = context.StageId(StageNames.Of(null, "Documents", Depth + 1));
            return new UnitOfWorkSinkStage<T>(context, $"documents ('{collection}')", (unit, item, serializer) =>
            {
                string documentKey;
                try
                {
                    documentKey = documentId(item);
                }
                catch (Exception ex)
                {
                    throw new InvalidOperationException($"Stream '{context.Run.Name}': the document id of a result of stage '{id}' could not be computed: {ex.Message}", ex);
                }

                var buffer = new System.Buffers.ArrayBufferWriter<byte>();
                serializer.Serialize(buffer, item!, typeof(T));
                unit.Upsert(collection, documentKey, buffer.WrittenMemory);
            });
        });
    }

    /// <summary>
    /// Ends the stream in messages published to <paramref name="topic"/> through the transactional outbox: each result
    /// is stored as an outgoing message in the same unit of work as the snapshot whose state includes it (and that
    /// acknowledges a transport source's input), and the outbox relay (<c>AddOutbox()</c>) publishes it. After a crash
    /// the pipeline resumes from that snapshot, so each result enters the outbox exactly once; the relay then hands it
    /// to the transport at least once, so a consumer with an inbox handles it once. Needs a snapshot store on a store
    /// with units of work, like <see cref="ToDocuments"/>; results leave when a snapshot commits.
    /// </summary>
    /// <param name="publisher">The application's publisher (<c>IPublisher</c> from the container): it names and stamps the messages.</param>
    /// <param name="topic">The topic.</param>
    /// <returns>The runnable pipeline.</returns>
    public StreamPipeline PublishToOutbox(IPublisher publisher, string topic)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(topic);
        return ToOutbox(publisher, topic, Storage.OutboxMessageKind.Publish);
    }

    /// <summary>
    /// Ends the stream in messages sent to <paramref name="queue"/> through the transactional outbox, exactly once into
    /// the outbox as <see cref="PublishToOutbox"/> describes.
    /// </summary>
    /// <param name="sender">The application's queue sender (<c>IQueueSender</c> from the container).</param>
    /// <param name="queue">The queue.</param>
    /// <returns>The runnable pipeline.</returns>
    public StreamPipeline SendToOutbox(IQueueSender sender, string queue)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(queue);
        return ToOutbox(sender, queue, Storage.OutboxMessageKind.Send);
    }

    private StreamPipeline ToOutbox(object messaging, string destination, Storage.OutboxMessageKind kind)
    {
        ArgumentNullException.ThrowIfNull(messaging);
        var bus = messaging as Hosting.MessageBus ?? throw new ArgumentException(
            "The outbox sinks take the IPublisher or IQueueSender that AddPatterns(...) registered (resolve it from the container).", nameof(messaging));
        return Sink(context => new UnitOfWorkSinkStage<T>(context, $"the outbox ('{destination}')", (unit, item, serializer) =>
            unit.Enqueue(Outbox.OutboxCodec.Message(bus, serializer, destination, kind, (object)item!, default))));
    }

    /// <summary>Builds the stages (downstream first) and returns the driver of the source.</summary>
    internal abstract Driver Connect(Func<ChainContext, Stage<T>> downstream, RunContext run);

    private StreamPipeline Sink(Func<ChainContext, Stage<T>> createSink)
    {
        var key = new object();
        return new StreamPipeline(Options, run => Connect(
            context => context.Partition < 0
                ? createSink(context)
                : run.GetOrAddShared(key, () => new MergeHub<T>(run, context.PartitionCount, createSink)).Input,
            run));
    }
}

internal sealed class SourceStream<T>(StreamOptions options, Func<RunContext, Driver<T>> createDriver) : DataStream<T>(options, 0, null)
{
    internal override Driver Connect(Func<ChainContext, Stage<T>> downstream, RunContext run)
    {
        var driver = createDriver(run);
        driver.Head = downstream(new ChainContext(run, -1, 0, driver));
        return driver;
    }
}

/// <summary>One operator. <paramref name="kind"/> is <see langword="null"/> for an operator that names its stages itself (windows) or has none (event time).</summary>
internal sealed class OperatorStream<TIn, TOut>(DataStream<TIn> upstream, string? kind, string? name, Func<Stage<TOut>, ChainContext, string, Stage<TIn>> create, EventTimeSettings<TOut>? eventTime)
    : DataStream<TOut>(upstream.Options, upstream.Depth + 1, eventTime)
{
    internal override Driver Connect(Func<ChainContext, Stage<TOut>> downstream, RunContext run) =>
        upstream.Connect(context => create(downstream(context), context, kind is null ? string.Empty : context.StageId(StageNames.Of(name, kind, Depth))), run);
}

internal sealed class PartitionStream<T, TKey>(DataStream<T> upstream, Func<T, TKey> keySelector, int partitions, FailurePolicy? onError, string? name)
    : DataStream<T>(upstream.Options, upstream.Depth + 1, upstream.EventTime)
{
    internal override Driver Connect(Func<ChainContext, Stage<T>> downstream, RunContext run) =>
        upstream.Connect(
            context => context.Partition >= 0
                ? throw new InvalidOperationException("A stream that is already partitioned cannot be partitioned again.")
                : new PartitionRouter<T, TKey>(context, keySelector, partitions, downstream, new StageGuard(context, context.StageId(StageNames.Of(name, "PartitionBy", Depth)), onError)),
            run);
}
