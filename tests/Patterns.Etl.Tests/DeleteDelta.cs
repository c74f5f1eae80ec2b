using FluentAssertions;
using Patterns.Etl.Samples;

namespace Patterns.Etl.Tests;

/// <summary>
/// A delta with delete markers (status 'deleted') against <see cref="SqliteLoadTests.Generated"/> 2,000 orders. In file
/// order: an insert of key 9001 and its delete marker (the marker wins: nothing to delete), a marker for absent key 9999,
/// an update of key 1 and its marker (key 1 is deleted); then keys 2..2000, each once: every 20th a delete marker, ids
/// ending 2..9 of each 20 updated, the rest unchanged; then 1,000 new keys. The leading rows share the first batch.
/// </summary>
internal static class DeleteDelta
{
    public const int Inserted = 1_000;
    public const int Updated = 899;
    public const int Deleted = 101;

    public static bool IsDelete(Order order) => order.Status == "deleted";

    public static List<Order> Rows()
    {
        var original = SqliteLoadTests.Generated(2_000);
        var rows = new List<Order>();
        var extra = SqliteLoadTests.Generated(1, seed: 9, firstId: 9_001)[0];
        rows.Add(extra);
        rows.Add(extra with { Status = "deleted" });
        rows.Add(extra with { Id = 9_999, Status = "deleted" });
        rows.Add(original[0] with { Status = "changed" });
        rows.Add(original[0] with { Status = "deleted" });
        foreach (var order in original.Skip(1))
        {
            rows.Add((order.Id % 20) switch
            {
                0 => order with { Status = "deleted", Amount = -1 },
                < 10 => order with { Status = "changed", Amount = order.Amount + 1 },
                _ => order,
            });
        }

        rows.AddRange(SqliteLoadTests.Generated(1_000, seed: 8, firstId: 2_001));
        return rows;
    }

    public static void Write(string path) =>
        File.WriteAllLines(path, [OrderData.Header, .. Rows().Select(OrderData.Line)]);

    /// <summary>The target after the delta, applied row by row in memory.</summary>
    public static List<Order> Expected()
    {
        var target = SqliteLoadTests.Generated(2_000).ToDictionary(o => o.Id);
        foreach (var row in Rows())
        {
            if (IsDelete(row))
            {
                target.Remove(row.Id);
            }
            else
            {
                target[row.Id] = row;
            }
        }

        return [.. target.Values.OrderBy(o => o.Id)];
    }

    /// <summary>Loads the 2,000 orders, merges the delta, checks the counts and the target, then merges it again from the start: 0 rows change.</summary>
    public static async Task MergeAndRerunAsync(EtlSink<Order> sink, string delta, Func<Task<List<Order>>> target)
    {
        await Etl.From(SqliteLoadTests.Generated(2_000)).To(sink, "base").RunAsync();
        Write(delta);

        var result = await Etl.From(Csv.Read<Order>(delta)).To(sink, "delta").RunAsync(new EtlRunOptions { BatchSize = 300 });

        result.Status.Should().Be(EtlRunStatus.Completed);
        result.RowsInserted.Should().Be(Inserted);
        result.RowsUpdated.Should().Be(Updated);
        result.RowsDeleted.Should().Be(Deleted);
        (await target()).Should().Equal(Expected());

        var finished = await Etl.From(Csv.Read<Order>(delta)).To(sink, "delta").RunAsync(new EtlRunOptions { BatchSize = 300 });
        var again = await Etl.From(Csv.Read<Order>(delta)).To(sink, "delta").RunAsync(new EtlRunOptions { BatchSize = 300, Restart = true });

        finished.Status.Should().Be(EtlRunStatus.AlreadyCompleted);
        again.RowsRead.Should().Be(3_004);
        again.RowsChanged.Should().Be(0, "deleting absent keys and re-merging equal rows changes nothing");
        (await target()).Should().Equal(Expected());
    }

    /// <summary>
    /// Stops the delta's merge after three batches and resumes it: the stopped run deleted exactly the rows its committed
    /// bookmark covers, and the two runs' counts add up to a clean run's.
    /// </summary>
    public static async Task StopThenResumeAsync(EtlSink<Order> sink, string delta, Func<Task<List<Order>>> target, Func<Task<long>> committedOffset, Func<Task<long>> originalsLeft)
    {
        await Etl.From(SqliteLoadTests.Generated(2_000)).To(sink, "base").RunAsync();
        Write(delta);
        var pipeline = Etl.From(Csv.Read<Order>(delta)).To(sink, "delta");
        using var stop = new CancellationTokenSource();
        var progress = new SyncProgress(p =>
        {
            if (p.RowsLoaded >= 900)
            {
                stop.Cancel();
            }
        });

        var first = await pipeline.RunAsync(new EtlRunOptions { BatchSize = 300, Progress = progress }, stop.Token);
        var offset = await committedOffset();
        var deletedSoFar = 2_000 - await originalsLeft();
        var second = await pipeline.RunAsync(new EtlRunOptions { BatchSize = 300 });

        first.Status.Should().Be(EtlRunStatus.Stopped);
        first.RowsDeleted.Should().Be(deletedSoFar, "the deletes of each batch commit with its bookmark");
        offset.Should().Be(first.RowsLoaded);
        second.Status.Should().Be(EtlRunStatus.Completed);
        (first.RowsInserted + second.RowsInserted).Should().Be(Inserted);
        (first.RowsUpdated + second.RowsUpdated).Should().Be(Updated);
        (first.RowsDeleted + second.RowsDeleted).Should().Be(Deleted);
        (await target()).Should().Equal(Expected());
    }
}
