using System.Runtime.CompilerServices;

namespace Patterns.Etl.Tests;

/// <summary>A spilling DistinctBy in a run that loads in batches: bookmarks never cover spilled rows, and batches keep their bounds.</summary>
public sealed class SpillLoadTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private EtlSpill Spill => new() { TempDirectory = _dir.Path };

    [Fact]
    public async Task DistinctBy_StartsSpillingInsideASourceRowAfterTheBatchFilled_TheBatchCommitsNoBookmarkAndAResumeLosesNoRow()
    {
        // Each source row makes three rows of distinct keys; a key costs 68 + 32 bytes, so the fifth key (11, the second row
        // of source row 1) passes the 450-byte budget and 12 is the first row spilled. The batch of 4 filled on 10 and took
        // its commit then, before the stage spilled: the commit sealed after source row 1 must not carry its bookmark.
        var store = new BookmarkStore { FailOnWrite = 2 };
        var expected = Enumerable.Range(0, 10).SelectMany(i => new[] { i * 10, (i * 10) + 1, (i * 10) + 2 }).ToList();

        var failed = () => Pipeline(store).RunAsync(new EtlRunOptions { BatchSize = 4 });

        (await failed.Should().ThrowAsync<IOException>()).Which.Message.Should().Be("sink failed");
        store.Writes.Should().Be(2);
        store.Bookmark.Should().BeNull("the only committed batch was sealed after the stage started holding rows back");

        store.FailOnWrite = 0;
        var resumed = await Pipeline(store).RunAsync(new EtlRunOptions { BatchSize = 4 });

        resumed.Status.Should().Be(EtlRunStatus.Completed);
        store.Rows.Should().Equal(expected);
        Directory.GetFileSystemEntries(_dir.Path).Should().BeEmpty();
    }

    [Fact]
    public async Task DistinctBy_SpilledRowsLeavingAfterTheSourceEnds_KeepMaxBatchBytes()
    {
        // 1,000 distinct keys, 4 held: 996 rows leave from the spill files once the source has ended. Each weighs 100
        // bytes, so no batch may hold more than 10 (BatchSize alone would allow 100, and a held batch up to 200).
        var store = new BookmarkStore();

        var result = await Etl.From(new Numbers(1_000))
            .DistinctBy(x => x, maxBytes: 350, keySize: _ => 68, spill: Spill)
            .To(new BookmarkSink(store), "bytes")
            .WithRowSize(_ => 100)
            .RunAsync(new EtlRunOptions { BatchSize = 100, MaxBatchBytes = 1_000 });

        result.RowsLoaded.Should().Be(1_000);
        store.Rows.Should().Equal(Enumerable.Range(0, 1_000));
        store.Batches.Should().OnlyContain(n => n <= 10);
        store.Batches.Should().HaveCount(100);
    }

    private EtlPipeline<int> Pipeline(BookmarkStore store) =>
        Etl.From(new Numbers(10))
            .SelectMany(i => new[] { i * 10, (i * 10) + 1, (i * 10) + 2 })
            .DistinctBy(x => x, maxBytes: 450, keySize: _ => 68, spill: Spill)
            .To(new BookmarkSink(store), "fan-out");

    /// <summary>0 to count − 1, resumable: the bookmark's offset is the rows consumed.</summary>
    private sealed class Numbers(int count) : EtlSource<int>
    {
        public override string Name => "numbers";

        public override bool CanResume => true;

        public override async IAsyncEnumerable<int> ReadAsync(EtlSourceContext context, [EnumeratorCancellation] CancellationToken cancellationToken)
        {
            await Task.CompletedTask;
            for (var i = (int)context.Resume.Offset; i < count; i++)
            {
                context.Offset = i + 1;
                context.Line = i + 1;
                yield return i;
            }
        }
    }

    /// <summary>What a target keeps between runs: its rows, its bookmark, the batches written.</summary>
    internal sealed class BookmarkStore
    {
        public List<int> Rows { get; } = [];

        public List<int> Batches { get; } = [];

        public EtlBookmark? Bookmark { get; set; }

        public int FailOnWrite { get; set; }

        public int Writes { get; set; }
    }

    /// <summary>Stores rows and the bookmark of each batch together, as a database sink does in one transaction; fails on the write numbered <see cref="BookmarkStore.FailOnWrite"/>.</summary>
    internal sealed class BookmarkSink(BookmarkStore store) : EtlSink<int>
    {
        public override string Name => "bookmarks";

        public override ValueTask<EtlSinkWriter<int>> OpenAsync(EtlSinkContext context, CancellationToken cancellationToken) => new(new Writer(store));

        private sealed class Writer(BookmarkStore store) : EtlSinkWriter<int>
        {
            public override bool StoresBookmarks => true;

            public override ValueTask<EtlBookmark?> ReadBookmarkAsync(CancellationToken cancellationToken) => new(store.Bookmark);

            public override ValueTask ResetAsync(CancellationToken cancellationToken)
            {
                store.Rows.Clear();
                store.Bookmark = null;
                return default;
            }

            public override ValueTask<EtlLoadCounts> WriteAsync(ReadOnlyMemory<int> rows, EtlCommit commit, CancellationToken cancellationToken)
            {
                if (++store.Writes == store.FailOnWrite)
                {
                    throw new IOException("sink failed");
                }

                store.Rows.AddRange(rows.Span);
                store.Batches.Add(rows.Length);
                store.Bookmark = commit.Bookmark ?? store.Bookmark;
                return new(new EtlLoadCounts(rows.Length, 0, 0));
            }

            public override ValueTask<EtlLoadCounts> CompleteAsync(EtlCommit commit, CancellationToken cancellationToken)
            {
                store.Bookmark = commit.Bookmark ?? store.Bookmark;
                return default;
            }
        }
    }
}
