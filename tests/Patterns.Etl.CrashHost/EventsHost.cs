using System.Globalization;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Patterns.Etl;
using Patterns.Etl.Samples;
using Patterns.EventSourcing;

namespace Patterns.Etl.Samples
{
    /// <summary>The event the event-store kill test appends for each order.</summary>
    public sealed record OrderEvent(int Id, long CustomerId, decimal Amount)
    {
        public const string Name = "etl.order-event";

        /// <summary>The stream an order's event goes to: one per customer bucket.</summary>
        public static string StreamOf(long customerId) => "customer-" + (customerId % 7);
    }
}

/// <summary>
/// The events mode of the crash host: loads a CSV of orders into the event store (SQLite or PostgreSQL) through the
/// event-store sink, one event per order, printing "loaded N" after each committed batch and waiting for a line on stdin.
/// Usage: events sqlite|postgres &lt;connection string&gt; &lt;schema (postgres)&gt; &lt;csv&gt; &lt;job&gt; &lt;batch size&gt;.
/// </summary>
public static class EventsHost
{
    public static async Task RunAsync(string[] args)
    {
        var (kind, connectionString, schema, csv, job) = (args[1], args[2], args[3], args[4], args[5]);
        var batchSize = int.Parse(args[6], CultureInfo.InvariantCulture);
        using var host = Build(kind, connectionString, schema);
        await host.StartAsync();
        var result = await Etl.From(Csv.Read<Order>(csv))
            .Validate(o => o.Amount < 0 ? "negative amount" : null, "amount")
            .To(EtlEventStore.Append<Order>(host.Services, o => OrderEvent.StreamOf(o.CustomerId), o => new OrderEvent(o.Id, o.CustomerId, o.Amount)), job)
            .RunAsync(new EtlRunOptions { BatchSize = batchSize, Progress = new Gate() });
        Console.Out.WriteLine($"done {result.Status} {result.RowsRead} {result.RowsInserted}");
        Console.Out.Flush();
        await host.StopAsync();
    }

    /// <summary>A host with the event store the test and the child share.</summary>
    public static IHost Build(string kind, string connectionString, string schema)
    {
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true, EnvironmentName = "Testing" });
        builder.Logging.ClearProviders();
        builder.AddEventSourcing(es =>
        {
            if (kind == "sqlite")
            {
                es.UseSqlite(connectionString);
            }
            else
            {
                es.UsePostgres(connectionString, o => o.Schema = schema);
            }

            es.AddEvent<OrderEvent>(OrderEvent.Name);
        });
        return builder.Build();
    }

    private sealed class Gate : IProgress<EtlProgress>
    {
        public void Report(EtlProgress value)
        {
            Console.Out.WriteLine($"loaded {value.RowsLoaded}");
            Console.Out.Flush();
            Console.In.ReadLine();
        }
    }
}
