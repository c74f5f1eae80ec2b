using System.Reactive.Linq;
using System.Reactive.Subjects;
using System.Threading.Tasks.Dataflow;
using BenchmarkDotNet.Attributes;
using Patterns.Batching;

namespace Patterns.Benchmarks;

/// <summary>
/// Add items one by one to a batcher with batches of 100 and wait until every batch has been handled. One operation
/// is one item added and handled (in its batch). Items are <see cref="int"/>s, so whatever is allocated is the
/// batcher's own.
/// </summary>
[Config(typeof(BenchmarkConfig))]
public class BatchingBenchmarks
{
    /// <summary>Items per invocation.</summary>
    public const int Items = 100_000;

    /// <summary>Items per batch.</summary>
    public const int BatchSize = 100;

    private readonly BatchSignal _signal = new();

    private BatchBlock<int>? _batchBlock;
    private ActionBlock<int[]>? _actionBlock;

    private Subject<int>? _subject;
    private IDisposable? _subscription;

    private Batcher<int>? _batcher;

    [GlobalSetup(Target = nameof(DataflowBatchBlock))]
    public void SetupDataflow()
    {
        var signal = _signal;
        _batchBlock = new BatchBlock<int>(BatchSize);
        _actionBlock = new ActionBlock<int[]>(batch => signal.Signal(batch.Length));
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
        _subject = new Subject<int>();
        _subscription = _subject.Buffer(BatchSize).Subscribe(batch => signal.Signal(batch.Count));
    }

    [GlobalCleanup(Target = nameof(RxBuffer))]
    public void CleanupRx()
    {
        _subject!.OnCompleted();
        _subscription!.Dispose();
        _subject.Dispose();
    }

    [GlobalSetup(Target = nameof(Patterns))]
    public void SetupPatterns()
    {
        var signal = _signal;
        _batcher = Batcher.Create<int>(
            (batch, cancellationToken) =>
            {
                signal.Signal(batch.Count);
                return ValueTask.CompletedTask;
            },
            new BatchOptions { MaxCount = BatchSize });
    }

    [GlobalCleanup(Target = nameof(Patterns))]
    public Task CleanupPatterns() => _batcher!.CompleteAsync();

    /// <summary>The baseline: a TPL Dataflow <c>BatchBlock(100)</c> linked to an <c>ActionBlock</c>, fed with <c>Post</c>.</summary>
    [Benchmark(Baseline = true, OperationsPerInvoke = Items)]
    public async Task DataflowBatchBlock()
    {
        var done = _signal.Reset(Items);
        var block = _batchBlock!;
        for (var i = 0; i < Items; i++)
        {
            block.Post(i);
        }

        await done;
    }

    /// <summary>System.Reactive's <c>Buffer(100)</c> on a <c>Subject</c>: the batch is handled synchronously on the producer's thread.</summary>
    [Benchmark(OperationsPerInvoke = Items)]
    public async Task RxBuffer()
    {
        var done = _signal.Reset(Items);
        var subject = _subject!;
        for (var i = 0; i < Items; i++)
        {
            subject.OnNext(i);
        }

        await done;
    }

    /// <summary>A Patterns batcher (MaxCount 100, default capacity 1024 and max age 1 s), fed with <c>AddAsync</c>; batches are handled on a worker.</summary>
    [Benchmark(OperationsPerInvoke = Items)]
    public async Task Patterns()
    {
        var done = _signal.Reset(Items);
        var batcher = _batcher!;
        for (var i = 0; i < Items; i++)
        {
            await batcher.AddAsync(i);
        }

        await done;
    }
}
