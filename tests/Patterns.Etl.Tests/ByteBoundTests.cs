using Patterns.Etl.Samples;

namespace Patterns.Etl.Tests;

public sealed class ByteBoundTests
{
    private static long SizeOf(string row) => 24 + (2L * row.Length);

    [Fact]
    public async Task ABatchEndsAtTheRowThatReachesTheByteBound_WithTheBookmarkOfThatRow()
    {
        var rows = Enumerable.Range(1, 3_000).Select(i => new string('x', i % 50)).ToList();
        var sink = new BatchRecorder();

        var result = await Etl.From(rows).To(sink).WithRowSize(SizeOf).RunAsync(new EtlRunOptions { BatchSize = 1_000, MaxBatchBytes = 2_000 });

        sink.Rows.Should().Equal(rows);
        result.RowsLoaded.Should().Be(3_000);
        sink.Batches.Should().HaveCountGreaterThan(30);
        long offset = 0;
        foreach (var (batch, index) in sink.Batches.Select((b, i) => (b, i)))
        {
            var bytes = batch.Rows.Sum(SizeOf);
            if (index < sink.Batches.Count - 1)
            {
                bytes.Should().BeGreaterThanOrEqualTo(2_000);
                (bytes - SizeOf(batch.Rows[^1])).Should().BeLessThan(2_000, "the batch ends at the first row that reaches the bound");
            }

            offset += batch.Rows.Count;
            batch.Offset.Should().Be(offset, "each batch's bookmark covers its rows and nothing after them");
        }
    }

    [Fact]
    public async Task SmallRows_StillEndBatchesAtBatchSize()
    {
        var sink = new BatchRecorder();

        await Etl.From(Enumerable.Range(1, 1_000).Select(i => "r")).To(sink).WithRowSize(SizeOf).RunAsync(new EtlRunOptions { BatchSize = 100, MaxBatchBytes = 1_000_000 });

        sink.Batches.Select(b => b.Rows.Count).Should().Equal(Enumerable.Repeat(100, 10));
    }

    [Fact]
    public async Task LargeRows_TheSourceStaysWithinTheByteBound()
    {
        const long maxBatchBytes = 20_000;
        var source = new BytesAhead(2_000, length: 1_000);
        var sink = new BatchRecorder(source);

        await Etl.From(source.Rows()).To(sink).WithRowSize(SizeOf).RunAsync(new EtlRunOptions { BatchSize = 1_000, MaxBatchBytes = maxBatchBytes, MaxPendingBatches = 1 });

        sink.Rows.Should().HaveCount(2_000);

        // Sealed batches (MaxPendingBatches + 1), the one loading and the open one, each at most one row over the bound,
        // and the stream's 64-row buffer. Bounded in rows only (2 × 1,000 rows of 2 KB) it would be about 4 MB.
        var row = SizeOf(new string('x', 1_000));
        source.MaxAhead.Should().BeLessThanOrEqualTo((4 * (maxBatchBytes + row)) + (65 * row));
    }

    [Fact]
    public async Task ByteBoundWithoutAMeasure_FailsSayingHowToMeasure()
    {
        var run = () => Etl.From(new[] { "a" }).To(new ListSink<string>()).RunAsync(new EtlRunOptions { MaxBatchBytes = 100 });

        (await run.Should().ThrowAsync<ArgumentException>()).Which.Message.Should().Contain("EtlRunOptions.MaxBatchBytes is set, but the sink 'list' cannot measure rows: measure them with pipeline.WithRowSize(row => ...).");
    }

    [Fact]
    public void SchemaEstimate_CountsFixedColumnsAndCharacters()
    {
        var order = new Order(1, 2, 3m, DateTime.UnixEpoch, "new", "north", "p", "web", null, "a@b.c");

        Order.Schema.EstimateSize(order).Should().Be(24 + 4 + 8 + 16 + 8 + (24 + 6) + (24 + 10) + (24 + 2) + (24 + 6) + 0 + (24 + 10));
        Sqlite.Append<Order>("Data Source=x.db", "orders").RowSize!(order).Should().Be(Order.Schema.EstimateSize(order));
    }

    private sealed class BytesAhead(int count, int length)
    {
        private long _pulled;

        public long Done;

        public long MaxAhead { get; private set; }

        public IEnumerable<string> Rows()
        {
            for (var i = 0; i < count; i++)
            {
                var row = new string('x', length);
                _pulled += SizeOf(row);
                MaxAhead = Math.Max(MaxAhead, _pulled - Interlocked.Read(ref Done));
                yield return row;
            }
        }
    }

    /// <summary>Records each batch with its bookmark; with a source, it loads slowly and reports what it loaded.</summary>
    private sealed class BatchRecorder(BytesAhead? source = null) : EtlSink<string>
    {
        public List<(List<string> Rows, long Offset)> Batches { get; } = [];

        public List<string> Rows => [.. Batches.SelectMany(b => b.Rows)];

        public override string Name => "recorder";

        public override ValueTask<EtlSinkWriter<string>> OpenAsync(EtlSinkContext context, CancellationToken cancellationToken) => new(new Writer(this));

        private sealed class Writer(BatchRecorder sink) : EtlSinkWriter<string>
        {
            public override async ValueTask<EtlLoadCounts> WriteAsync(ReadOnlyMemory<string> rows, EtlCommit commit, CancellationToken cancellationToken)
            {
                if (sink.Source is { } source)
                {
                    for (var i = 0; i < 20; i++)
                    {
                        await Task.Yield();
                    }

                    Interlocked.Add(ref source.Done, rows.ToArray().Sum(SizeOf));
                }

                sink.Batches.Add(([.. rows.ToArray()], commit.Bookmark!.Offset));
                return new EtlLoadCounts(rows.Length, 0, 0);
            }

            public override ValueTask<EtlLoadCounts> CompleteAsync(EtlCommit commit, CancellationToken cancellationToken) => default;
        }

        private BytesAhead? Source => source;
    }
}
