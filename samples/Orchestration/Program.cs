// Order fulfilment saga on SQLite. Run it twice:
//   dotnet run --project samples/Orchestration            # orders 1 and 2 finish; order 3 waits for its carrier
//   dotnet run --project samples/Orchestration            # resumes order 3 from its history: the timeout fires, it compensates
// Pass a file name to use another database; delete the file to start over.
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using OrchestrationSample;
using Patterns.EventSourcing;
using Patterns.Orchestration;
using Patterns.PubSub;

var database = args.FirstOrDefault() ?? "orchestration-sample.db";
var builder = Host.CreateApplicationBuilder();
builder.Logging.SetMinimumLevel(LogLevel.Warning);
builder.AddPatterns(p => p.UseInMemory().UseSystemTextJson(OrderJson.Default));
builder.AddEventSourcing(es => es.UseSqlite($"Data Source={database}"));
builder.AddOrchestration(o =>
{
    // One process owns the store's instances; a stable node id takes them back at once after a crash.
    o.Options.NodeId = "order-sample";
    o.AddWorkflow<OrderFulfilment>(w => w.Query<string>("stage")) // declared: its result type is checked at start
        .AddActivitiesFromAssembly() // generated: Warehouse's, Payments' and Shipping's methods, called directly
        .CorrelateMessage<ShipmentConfirmed>("shipments", m => m.OrderId);
});
using var host = builder.Build();

var client = host.Services.GetRequiredService<IWorkflowClient>();
await host.StartAsync(); // resumes every unfinished order from its history
var resumed = await client.ListAsync(WorkflowStatus.Running).Select(i => i.InstanceId).ToListAsync();
Console.WriteLine(resumed.Count == 0 ? $"Fresh start on {database}." : $"Resumed from {database}: {string.Join(", ", resumed)}.");

Order[] orders =
[
    new("order-1", "KB-101", 2, 59.90m, "4111-1111"),
    new("order-2", "MS-202", 1, 24.50m, "0000-0000"),
    new("order-3", "HD-303", 1, 99.00m, "4111-2222"),
];
foreach (var order in orders)
{
    await client.StartAsync(nameof(OrderFulfilment), order.OrderId, order); // idempotent: a second run changes nothing
}

// The carrier confirms order 1 only (a pub/sub message, correlated to its workflow by order id); on a second run order 1
// has long finished, and a confirmation now would only be for an instance that no longer waits for it.
var publisher = host.Services.GetRequiredService<IPublisher>();
if ((await client.DescribeAsync("order-1"))!.Status == WorkflowStatus.Running)
{
    await WaitForStageAsync(client, "order-1", "waiting for the carrier");
    await publisher.PublishAsync("shipments", new ShipmentConfirmed("order-1", "TRACK-1"));
}

foreach (var id in new[] { "order-1", "order-2" })
{
    Console.WriteLine($"{id}: {await client.GetResultAsync<string>(id)}");
}

var third = await client.DescribeAsync("order-3");
if (resumed.Contains("order-3") || third!.Status != WorkflowStatus.Running)
{
    Console.WriteLine($"order-3: {await client.GetResultAsync<string>("order-3")}");
}
else
{
    await WaitForStageAsync(client, "order-3", "waiting for the carrier");
    Console.WriteLine($"order-3: {await client.QueryAsync<string>("order-3", "stage")}; its {OrderFulfilment.ConfirmationTimeout.TotalSeconds} s timeout is a durable timer.");
    Console.WriteLine("Stopping now. Run the sample again: it resumes order-3 from its history and compensates when the timeout fires.");
}

await host.StopAsync();

static async Task WaitForStageAsync(IWorkflowClient client, string id, string stage)
{
    for (var i = 0; i < 500 && await client.QueryAsync<string>(id, "stage") != stage; i++)
    {
        await Task.Delay(10);
    }
}
