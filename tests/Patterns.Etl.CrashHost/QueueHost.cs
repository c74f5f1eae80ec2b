using System.Globalization;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Patterns.Etl;
using Patterns.Etl.Samples;

/// <summary>
/// The queue mode of the crash host: loads the orders a RabbitMQ queue holds into SQLite (merge on id, negative amounts
/// quarantined), printing "loaded N" after each committed batch and waiting for a line on stdin; it stops once the target
/// holds <c>good</c> rows and the quarantine <c>bad</c> distinct rows, or when it is killed.
/// Usage: queue &lt;amqp uri&gt; &lt;name prefix&gt; &lt;sqlite connection string&gt; &lt;job&gt; &lt;batch size&gt; &lt;good&gt; &lt;bad&gt;.
/// </summary>
internal static class QueueHost
{
    public const string Queue = "orders";

    public static async Task RunAsync(string[] args)
    {
        var (uri, prefix, connectionString, job) = (args[1], args[2], args[3], args[4]);
        var batchSize = int.Parse(args[5], CultureInfo.InvariantCulture);
        var good = int.Parse(args[6], CultureInfo.InvariantCulture);
        var bad = int.Parse(args[7], CultureInfo.InvariantCulture);
        using var host = await StartAsync(uri, prefix);
        using var stop = new CancellationTokenSource();
        var result = await EtlTransport.FromQueue<Order>(host.Services, Queue, maxUnacknowledged: batchSize * 2)
            .Validate(o => o.Amount < 0 ? "negative amount" : null, "amount", raw: o => o.Id.ToString(CultureInfo.InvariantCulture))
            .To(Sqlite.Merge<Order>(connectionString, "orders", "id"), job)
            .RunAsync(new EtlRunOptions { BatchSize = batchSize, Progress = new GatedStop(connectionString, good, bad, stop) }, stop.Token);
        Console.Out.WriteLine($"done {result.Status}");
        Console.Out.Flush();
        await host.StopAsync();
    }

    /// <summary>Starts a host with Patterns on RabbitMQ.</summary>
    public static async Task<IHost> StartAsync(string uri, string prefix)
    {
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true, EnvironmentName = "Testing" });
        builder.Logging.ClearProviders();
        builder.AddPatterns(p => p.UseRabbitMq(o =>
        {
            o.Uri = new Uri(uri);
            o.NamePrefix = prefix;
        }));
        var host = builder.Build();
        await host.StartAsync();
        return host;
    }

    private sealed class GatedStop(string connectionString, int good, int bad, CancellationTokenSource stop) : IProgress<EtlProgress>
    {
        public void Report(EtlProgress value)
        {
            Console.Out.WriteLine($"loaded {value.RowsLoaded}");
            Console.Out.Flush();
            Console.In.ReadLine();
            using var connection = new SqliteConnection(connectionString);
            connection.Open();
            if (Count(connection, "SELECT count(*) FROM orders") >= good && Count(connection, "SELECT count(DISTINCT raw) FROM patterns_etl_quarantine") >= bad)
            {
                stop.Cancel();
            }
        }

        private static long Count(SqliteConnection connection, string sql)
        {
            using var command = connection.CreateCommand();
            command.CommandText = sql;
            try
            {
                return Convert.ToInt64(command.ExecuteScalar(), CultureInfo.InvariantCulture);
            }
            catch (SqliteException)
            {
                // The table is created with the first batch.
                return 0;
            }
        }
    }
}
