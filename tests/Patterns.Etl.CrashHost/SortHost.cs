using System.Runtime.CompilerServices;
using Patterns.Etl;
using Patterns.Etl.Samples;

/// <summary>
/// A child process for the sort kill test: sorts orders with a budget of 100 rows, spilling under the given folder;
/// once the source has given 1,000 rows (so the sort has spilled runs), prints "spilled" and waits, until it is killed.
/// Usage: Patterns.Etl.CrashHost sort &lt;temp folder&gt;.
/// </summary>
internal static class SortHost
{
    public static async Task RunAsync(string[] args)
    {
        var spill = new EtlSpill { TempDirectory = args[1] };
        await Etl.From(Rows())
            .OrderBy(o => o.CustomerId, Order.Schema, memoryBudgetRows: 100, spill: spill)
            .To(Csv.Write<Order>(Path.Combine(args[1], "sorted.csv")), "sort")
            .RunAsync();
        Console.Out.WriteLine("done");
    }

    private static async IAsyncEnumerable<Order> Rows([EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var random = new Random(42);
        for (var id = 1; id <= 1_000; id++)
        {
            yield return OrderData.Make(random, id);
        }

        // The source's last row was taken, so the sort holds 10 spilled runs: mid-sort, where the parent kills it.
        Console.Out.WriteLine("spilled");
        Console.Out.Flush();
        await Task.Run(Console.In.ReadLine, cancellationToken);
    }
}
