using System.Reactive.Linq;
using System.Reactive.Subjects;
using System.Threading.Channels;
using System.Threading.Tasks.Dataflow;
using Akka.Actor;
using Akka.Configuration;
using Akka.Streams;
using Akka.Streams.Dsl;
using BenchmarkDotNet.Attributes;
using Patterns.Batching;

namespace Patterns.Benchmarks;

/// <summary>
/// Add items to a batcher with batches of 100 from 1 or 4 producers (<see cref="Producers"/>) and wait until every batch
/// has been handled. One operation is one item added and handled (in its batch). Items are <see cref="int"/>s; every
/// handler copies its batch into an array of its own (what the docs' examples do with a batch they keep), so each side
/// allocates one <c>int[100]</c> per batch (4 B per item) for the items themselves.
/// </summary>
[Config(typeof(BenchmarkConfig))]
public class BatchingBenchmarks
{
    /// <summary>Items per invocation (all producers together).</summary>
    public const int Items = 100_000;

    /// <summary>Items per batch.</summary>
    public const int BatchSize = 100;

    private readonly BatchSignal _signal = new();

    private BatchBlock<int>? _batchBlock;
    private ActionBlock<int[]>? _actionBlock;

    private ISubject<int>? _subject;
    private Subject<int>? _rawSubject;
    private IDisposable? _subscription;

    private ActorSystem? _actorSystem;
    private Channel<int>? _akkaInput;

    private Batcher<int>? _batcher;

    /// <summary>Gets or sets the number of producer tasks adding items at once.</summary>
    [Params(1, 4)]
    public int Producers { get; set; }

    /// <summary>Gets the sum of the first item of every batch, so the copies cannot be optimized away.</summary>
    public long Sink { get; private set; }

    [GlobalSetup(Target = nameof(DataflowBatchBlock))]
    public void SetupDataflow()
    {
        var signal = _signal;
        _batchBlock = new BatchBlock<int>(BatchSize);

        // BatchBlock already hands out a new array per batch: that is its copy.
        _actionBlock = new ActionBlock<int[]>(batch =>
        {
            Sink += batch[0];
            signal.Signal(batch.Length);
        });
        _batchBlock.LinkTo(_actionBlock, new DataflowLinkOptions { PropagateCompletion = true });
    }

    [GlobalCleanup(Target = nameof(DataflowBatchBlock))]
    public Task CleanupDataflow()
    {
        _batchBlock!.Complete();
        return _actionBlock!.Completion;
    }

    [GlobalSetup(Target = nameof(RxBuffer))]
    public void SetupRx()
    {
        var signal = _signal;
        _rawSubject = new Subject<int>();

        // Rx forbids concurrent OnNext calls: with several producers the subject is synchronized, as Rx's docs require.
        _subject = Producers == 1 ? _rawSubject : Subject.Synchronize(_rawSubject);
        _subscription = _rawSubject.Buffer(BatchSize).Subscribe(batch =>
        {
            // Buffer already hands out a new list per batch: that is its copy.
            Sink += batch[0];
            signal.Signal(batch.Count);
        });
    }

    [GlobalCleanup(Target = nameof(RxBuffer))]
    public void CleanupRx()
    {
        _rawSubject!.OnCompleted();
        _subscription!.Dispose();
        _rawSubject.Dispose();
    }

    [GlobalSetup(Target = nameof(AkkaStreamsGrouped))]
    public void SetupAkka()
    {
        var signal = _signal;
        _actorSystem = ActorSystem.Create("batching", ConfigurationFactory.ParseString("akka.loglevel = ERROR\nakka.stdout-loglevel = ERROR"));
        _akkaInput = Channel.CreateBounded<int>(new BoundedChannelOptions(1024) { SingleReader = true, SingleWriter = Producers == 1 });
        ChannelSource.FromReader(_akkaInput.Reader)
            .Grouped(BatchSize)
            .RunForeach(
                batch =>
                {
                    // Grouped hands out a new collection per batch: that is its copy.
                    var count = 0;
                    foreach (var item in batch)
                    {
                        if (count++ == 0)
                        {
                            Sink += item;
                        }
                    }

                    signal.Signal(count);
                },
                _actorSystem.Materializer());
    }

    [GlobalCleanup(Target = nameof(AkkaStreamsGrouped))]
    public async Task CleanupAkka()
    {
        _akkaInput!.Writer.TryComplete();
        await _actorSystem!.Terminate();
    }

    [GlobalSetup(Target = nameof(Patterns))]
    public void SetupPatterns() => CreateBatcher(new BatchOptions { MaxCount = BatchSize });

    [GlobalSetup(Target = nameof(PatternsCapacityOfTheRun))]
    public void SetupPatternsCapacityOfTheRun() => CreateBatcher(new BatchOptions { MaxCount = BatchSize, Capacity = Items });

    [GlobalCleanup(Targets = [nameof(Patterns), nameof(PatternsCapacityOfTheRun)])]
    public Task CleanupPatterns() => _batcher!.CompleteAsync();

    /// <summary>The baseline: a TPL Dataflow <c>BatchBlock(100)</c> linked to an <c>ActionBlock</c>, fed with <c>Post</c>.</summary>
    [Benchmark(Baseline = true, OperationsPerInvoke = Items)]
    public async Task DataflowBatchBlock()
    {
        var done = _signal.Reset(Items);
        var block = _batchBlock!;
        await Produce(i =>
        {
            block.Post(i);
            return ValueTask.CompletedTask;
        });
        await done;
    }

    /// <summary>System.Reactive's <c>Buffer(100)</c> on a <c>Subject</c> (synchronized for several producers): the batch is handled on the producer's thread.</summary>
    [Benchmark(OperationsPerInvoke = Items)]
    public async Task RxBuffer()
    {
        var done = _signal.Reset(Items);
        var subject = _subject!;
        await Produce(i =>
        {
            subject.OnNext(i);
            return ValueTask.CompletedTask;
        });
        await done;
    }

    /// <summary>Akka.Streams 1.5.75: a bounded channel (1,024) read by <c>ChannelSource.FromReader</c>, <c>Grouped(100)</c>, <c>RunForeach</c>.</summary>
    [Benchmark(OperationsPerInvoke = Items)]
    public async Task AkkaStreamsGrouped()
    {
        var done = _signal.Reset(Items);
        var writer = _akkaInput!.Writer;
        await Produce(i => writer.WriteAsync(i));
        await done;
    }

    /// <summary>A Patterns batcher (MaxCount 100, default capacity 1024 and max age 1 s), fed with <c>AddAsync</c>; batches are handled on a worker.</summary>
    [Benchmark(OperationsPerInvoke = Items)]
    public async Task Patterns()
    {
        var done = _signal.Reset(Items);
        var batcher = _batcher!;
        await Produce(i =>
        {
            var adding = batcher.AddAsync(i);
            return adding.IsCompletedSuccessfully ? ValueTask.CompletedTask : AwaitAdd(adding);
        });
        await done;
    }

    /// <summary>
    /// The same batcher with a capacity of the whole run (100,000 items), like the Dataflow baseline's default
    /// unbounded <c>BatchBlock</c>: its producer never waits for space. The difference from <see cref="Patterns"/>
    /// is what the default capacity's back-pressure (1,024 items, about 10 batches) costs when the handler worker
    /// falls behind.
    /// </summary>
    [Benchmark(OperationsPerInvoke = Items)]
    public Task PatternsCapacityOfTheRun() => Patterns();

    private static async ValueTask AwaitAdd(ValueTask<bool> adding) => await adding;

    private void CreateBatcher(BatchOptions options)
    {
        var signal = _signal;
        _batcher = Batcher.Create<int>(
            (batch, cancellationToken) =>
            {
                // The batch is a view valid only while the handler runs: a handler that keeps the items copies them.
                var copy = batch.Items.ToArray();
                Sink += copy[0];
                signal.Signal(copy.Length);
                return ValueTask.CompletedTask;
            },
            options);
    }

    /// <summary>Runs <see cref="Producers"/> tasks that together add the items 0 .. Items-1 (each its own share, in order).</summary>
    private Task Produce(Func<int, ValueTask> add)
    {
        if (Producers == 1)
        {
            return Loop(0, Items);
        }

        var share = Items / Producers;
        return Task.WhenAll(Enumerable.Range(0, Producers).Select(p => Task.Run(() => Loop(p * share, share))));

        async Task Loop(int first, int count)
        {
            for (var i = first; i < first + count; i++)
            {
                var pending = add(i);
                if (!pending.IsCompletedSuccessfully)
                {
                    await pending;
                }
            }
        }
    }
}
