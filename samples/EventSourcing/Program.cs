// EventSourcing sample: a bank-account aggregate, an inline and an async projection, and a subscription.
using EventSourcingSample;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Patterns.EventSourcing;
using Patterns.Hosting;

var builder = Host.CreateApplicationBuilder(args);
builder.Logging.SetMinimumLevel(LogLevel.Warning);

// JSON from generated code instead of reflection (see BankJson), so the same program runs under NativeAOT.
builder.AddPatterns(p => p.UseSystemTextJson(BankJson.Default));

var alerts = new List<string>();
builder.AddEventSourcing(es =>
{
    // The store: a SQLite file next to the executable (Patterns.Sqlite), so the accounts are still there when the
    // sample runs again. es.UseInMemory() keeps everything in memory instead: nothing survives the process.
    es.UseSqlite(Path.Combine(AppContext.BaseDirectory, "bank.db"));

    es.AddEvent<AccountOpened>().AddEvent<MoneyDeposited>().AddEvent<MoneyWithdrawn>();
    es.AddAggregate<BankAccount>(o =>
    {
        o.StreamPrefix = "account-";
        o.SnapshotEvery = 5;
    });

    // Inline: written in the same transaction as the events.
    es.AddDocumentProjection<AccountSummary>("account-summaries", "account-summaries", e => e.StreamId, AccountSummary.Apply,
        o => o.Mode = ProjectionMode.Inline);

    // Async: driven by a subscription with a durable checkpoint.
    es.AddProjection<DailyTotalsProjection>("daily-totals", o => o.Collections.Add(DailyTotalsProjection.Collection));

    // A subscription to one event type, for side effects (an e-mail, a message to another service...).
    es.AddSubscription("large-withdrawals", (e, _) =>
    {
        if (e.Data is MoneyWithdrawn { Amount: >= 500m } withdrawal)
        {
            lock (alerts)
            {
                alerts.Add($"{e.StreamId} withdrew {withdrawal.Amount:0.00} ({withdrawal.Reference})");
            }
        }

        return ValueTask.CompletedTask;
    }, o => o.EventTypes.Add(typeof(MoneyWithdrawn)));
});

// A subscription runs in one process at a time (a lease in the store). A process killed with kill -9 cannot release
// its lease, so the next run waits for it to expire: short here, so a restarted sample resumes within seconds.
builder.Services.Configure<EventSourcingOptions>(o => o.LeaseDuration = TimeSpan.FromSeconds(3));

using var host = builder.Build();
await host.StartAsync();

var accounts = host.Services.GetRequiredService<IAggregateRepository<BankAccount>>();
var readModels = host.Services.GetRequiredService<IReadModels>();
var subscriptions = host.Services.GetRequiredService<IEventSubscriptions>();
var store = host.Services.GetRequiredService<IEventStore>();

// --deposits N: N more deposits first, enough to kill the process (kill -9) while the async projection catches up;
// the next run's check below shows the daily totals still equal the log.
var deposits = args.SkipWhile(a => a != "--deposits").Skip(1).Select(int.Parse).FirstOrDefault();
if (deposits > 0)
{
    await accounts.ExecuteAsync("load", a => a.Open("Load"));
    for (var i = 0; i < deposits; i++)
    {
        await accounts.ExecuteAsync("load", a => a.Deposit(1m, $"load {i}"));
        if (i % 1_000 == 0)
        {
            Console.WriteLine($"load              {i} deposits");
        }
    }
}

// Commands: load the aggregate, decide, append with the loaded version (retried on a concurrent append).
await accounts.ExecuteAsync("ada", a => a.Open("Ada Lovelace"));
await accounts.ExecuteAsync("ada", a => a.Deposit(1_000m, "salary"));
await accounts.ExecuteAsync("ada", a => a.Withdraw(250m, "rent"));
await accounts.ExecuteAsync("bob", a => a.Open("Bob Babbage"));
await accounts.ExecuteAsync("bob", a => a.Deposit(80m, "gift"));
try
{
    await accounts.ExecuteAsync("bob", a => a.Withdraw(a.Balance + 500m, "bike"));
}
catch (InvalidOperationException ex)
{
    Console.WriteLine($"rejected          bob: {ex.Message}");
}

var last = await accounts.ExecuteAsync("ada", a => a.Withdraw(600m, "car"));
Console.WriteLine($"aggregate         {last.StreamId} at version {last.Version}, balance {last.State.Balance:0.00}");

// The inline read model is already up to date.
await foreach (var (id, summary) in readModels.ListAsync<AccountSummary>("account-summaries"))
{
    Console.WriteLine($"inline read model {id}: {summary.Owner}, balance {summary.Balance:0.00}, {summary.Transactions} transactions");
}

// The async one catches up: wait for the position of the last append.
var head = await store.GetHeadPositionAsync();
await subscriptions.WaitForPositionAsync("daily-totals", head);
await subscriptions.WaitForPositionAsync("large-withdrawals", head);
await foreach (var (day, totals) in readModels.ListAsync<DailyTotals>(DailyTotalsProjection.Collection))
{
    Console.WriteLine($"async read model  {day}: deposited {totals.Deposited:0.00}, withdrawn {totals.Withdrawn:0.00}");
}

// Exactly once: the async totals equal a fold over the log itself, even after a kill -9 in the middle of a run
// (the projection commits its documents with its checkpoint).
var expected = new Dictionary<string, (decimal Deposited, decimal Withdrawn)>();
await foreach (var e in store.ReadAllAsync())
{
    var day = e.Timestamp.UtcDateTime.ToString("yyyy-MM-dd", System.Globalization.CultureInfo.InvariantCulture);
    var (deposited, withdrawn) = expected.GetValueOrDefault(day);
    expected[day] = e.Data switch
    {
        MoneyDeposited d => (deposited + d.Amount, withdrawn),
        MoneyWithdrawn w => (deposited, withdrawn + w.Amount),
        _ => (deposited, withdrawn),
    };
}

var projected = new Dictionary<string, (decimal Deposited, decimal Withdrawn)>();
await foreach (var (day, totals) in readModels.ListAsync<DailyTotals>(DailyTotalsProjection.Collection))
{
    projected[day] = (totals.Deposited, totals.Withdrawn);
}

var match = expected.Count == projected.Count && expected.All(p => projected.TryGetValue(p.Key, out var t) && t == p.Value);
Console.WriteLine($"check             async daily totals equal the sum over the log: {(match ? "yes" : "NO")}");
if (!match)
{
    Environment.ExitCode = 1;
}

lock (alerts)
{
    alerts.ForEach(alert => Console.WriteLine($"subscription      large withdrawal: {alert}"));
}

// History: the state as of an earlier version, and the stream itself.
var before = await accounts.LoadAsync("ada", version: 2);
Console.WriteLine($"as of version 2   ada's balance was {before.State.Balance:0.00}");
await foreach (var e in store.ReadStreamAsync(accounts.GetStreamId("ada")))
{
    Console.WriteLine($"stream            #{e.Version} (position {e.Position}) {e.EventType}: {e.Data}");
}

await host.StopAsync();
