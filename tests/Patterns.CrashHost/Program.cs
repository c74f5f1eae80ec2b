using System.Globalization;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Patterns.Conformance;
using Patterns.EventSourcing;
using Patterns.Outbox;
using Patterns.Postgres;
using Patterns.Sqlite;
using Patterns.Storage;

// Usage: Patterns.CrashHost <sqlite|postgres> <database file|schema> <run|project|append|outbox|inbox|relay|stream> <seed> [gated]
// Runs the process-kill tests' event sourcing (see KillProjection) on a SQLite file or a PostgreSQL schema (server
// from PATTERNS_POSTGRES, or the local default) until the process is killed:
//   project  runs the fold projection, printing "state <SubscriptionState>" whenever its state changes;
//   append   appends deposits to random accounts (three appenders at once on PostgreSQL, one on SQLite), printing "ack <stream> <version> <count> <sum>" after each append returned;
//   run      does both;
//   outbox   commits store sessions, each appending to a new stream kill-outbox-<message id> and sending one message
//            to the queue "kill-outbox" through the outbox (the relay does not run here), printing
//            "ack kill-outbox-<id> 1 1 <amount>" after each commit returned; every fourth session also tries a commit
//            that fails (a wrong expected version) with a message whose amount is -1, which must never be sent;
//   inbox    handles messages <seed>, <seed> + 1, ... as a store-writing handler does (see KillInbox): one unit of work
//            claims the message id in the inbox, appends an event to kill-inbox-<id> (any version, so only the inbox
//            stops a second copy) and sends a message through the outbox; prints "ack kill-inbox-<id> <version> 1 1"
//            after a commit returned and "ack kill-inbox-<id> 0 1 0" when the claim found the message handled already;
//   relay    runs the outbox relay (lease "outbox-relay", 1 second) on RabbitMQ at PATTERNS_RABBITMQ and commits store
//            sessions as "outbox" does, to kill-relay-<id> and the queue KillRelay.Queue(target) (see KillRelay), printing
//            "state Live" / "state Standby" when it takes or cannot take the relay's lease, and "ack kill-relay-<id> 1 1
//            <amount>" after each commit returned; every fourth session also tries a commit that fails, amount -1;
//   stream   runs the KillStream pipeline (clicks from a RabbitMQ queue at PATTERNS_RABBITMQ, windowed counts sent
//            through the outbox with the store snapshots), printing "ack click <n> 1 1" as clicks enter it.
// It prints "started" once the host is up. With "gated", it first prints "ready" once the runtime is up and its services
// built, and waits for a line on standard input before it starts: a test starts its next child ahead of time and lets it
// go when it needs it. The tests kill it (kill -9) at random points and check the totals.
if (args.Length is < 4 or > 5 || (args.Length == 5 && args[4] != "gated") || args[0] is not ("sqlite" or "postgres") || args[2] is not ("run" or "project" or "append" or "outbox" or "inbox" or "relay" or "stream")
    || !int.TryParse(args[3], CultureInfo.InvariantCulture, out var seed))
{
    await Console.Error.WriteLineAsync("usage: Patterns.CrashHost <sqlite|postgres> <database file|schema> <run|project|append|outbox|inbox|relay|stream> <seed> [gated]");
    return 2;
}

var target = args[1];
var role = args[2];
var services = new ServiceCollection();
services.AddEventSourcing(es =>
{
    if (args[0] == "sqlite")
    {
        es.UseSqlite(target);
    }
    else
    {
        var connectionString = Environment.GetEnvironmentVariable("PATTERNS_POSTGRES") is { Length: > 0 } configured
            ? configured
            : "Host=127.0.0.1;Port=5432;Username=postgres;Password=postgres;Database=patterns_tests";
        es.UsePostgres(connectionString, o => o.Schema = target);
    }

    if (role == "relay")
    {
        es.AddEvent<KillDeposit>();
    }
    else
    {
        KillProjection.Configure(es);
    }
});
if (role == "outbox")
{
    services.AddOutbox(o => o.RunRelay = false);
}

if (role == "relay")
{
    var broker = Environment.GetEnvironmentVariable("PATTERNS_RABBITMQ") is { Length: > 0 } uri ? uri : "amqp://guest:guest@127.0.0.1:5672/";
    services.AddPatterns(p => p.UseRabbitMq(broker));
    services.AddMessageQueue(q => q.AddQueue(KillRelay.Queue(target)));
    services.AddOutbox(o => o.LeaseDuration = KillProjection.LeaseDuration);
    services.AddLogging(b => b.AddConsole(o => o.LogToStandardErrorThreshold = LogLevel.Trace).SetMinimumLevel(LogLevel.Warning));

    // The store's leases, reporting whether this process holds the relay's.
    services.AddSingleton<ILeaseStore>(sp => new KillReportingLeases((ILeaseStore)sp.GetRequiredService<IEventStorage>(), line => RelayOutput.Print(line)));
}

if (role == "stream")
{
    var broker = Environment.GetEnvironmentVariable("PATTERNS_RABBITMQ") is { Length: > 0 } uri ? uri : "amqp://guest:guest@127.0.0.1:5672/";
    services.AddPatterns(p => p.UseRabbitMq(broker));
    services.AddMessageQueue(q => q.AddQueue(KillStream.Queue(target), o => o.Capacity = KillStream.QueueCapacity).AddQueue(KillStream.Results));

    // What the pipeline, the transport and the store log goes to standard error: the test shows its end when it waits
    // on this child in vain.
    services.AddLogging(b => b
        .AddSimpleConsole(o => o.TimestampFormat = "HH:mm:ss.fff ")
        .AddConsole(o => o.LogToStandardErrorThreshold = LogLevel.Trace)
        .SetMinimumLevel(LogLevel.Information)
        .AddFilter("Patterns.Streaming", LogLevel.Debug));
}

await using var provider = services.BuildServiceProvider();
void Print(string line) => RelayOutput.Print(line);

var subscriptions = provider.GetRequiredService<IEventSubscriptions>();
var store = provider.GetRequiredService<IEventStore>();
if (args.Length == 5)
{
    // Opens the store (and creates its schema) before it says it is ready, so that what follows the go is quick.
    await store.GetHeadPositionAsync();
    Print("ready");
    if (await Console.In.ReadLineAsync() is null)
    {
        return 0;
    }
}

var tasks = new List<Task>();
if (role == "stream")
{
    foreach (var service in provider.GetServices<IHostedService>())
    {
        await service.StartAsync(CancellationToken.None);
    }

    var snapshots = new Patterns.Streaming.StoreStreamSnapshotStore(
        provider.GetRequiredService<IDocumentStorage>(), provider.GetRequiredService<IUnitOfWorkStorage>(), provider.GetRequiredService<Patterns.Serialization.IMessageSerializer>());
    Print("started");
    var clicks = 0;
    try
    {
        await KillStream.Pipeline(provider, target, snapshots, _ => Print(string.Create(CultureInfo.InvariantCulture, $"ack click {Interlocked.Increment(ref clicks)} 1 1"))).RunAsync();
    }
    catch (Exception ex)
    {
        // Exit at once: disposing the services of a failed run must not keep the test waiting for clicks.
        await Console.Error.WriteLineAsync("The pipeline failed: " + ex);
        Environment.Exit(3);
    }

    await Console.Error.WriteLineAsync("The pipeline ended: its input is exhausted.");
    return 0;
}

if (role == "inbox")
{
    Print("started");
    var units = provider.GetRequiredService<IUnitOfWorkStorage>();
    for (var k = seed; ; k++)
    {
        var id = KillInbox.MessageId(k);
        try
        {
            var result = await units.CommitAsync(KillInbox.Handle(id));
            Print(string.Create(CultureInfo.InvariantCulture, $"ack {KillInbox.Stream(id)} {result.Appends[0].Version} 1 1"));
        }
        catch (DuplicateMessageException)
        {
            Print($"ack {KillInbox.Stream(id)} 0 1 0");
        }
    }
}

if (role == "relay")
{
    foreach (var service in provider.GetServices<IHostedService>())
    {
        await service.StartAsync(CancellationToken.None);
    }

    Print("started");
    var queue = KillRelay.Queue(target);
    var random = new Random(seed);
    for (var n = 0; ; n++)
    {
        await using var scope = provider.CreateAsyncScope();
        if (n % 4 == 3)
        {
            var doomed = scope.ServiceProvider.GetRequiredService<IStoreSession>();
            doomed.Append(KillRelay.ConflictStream, ExpectedVersion.Exact(999), [new EventData(new KillDeposit(-1))]);
            doomed.Send(queue, new KillDeposit(-1));
            try
            {
                await doomed.CommitAsync();
                await Console.Error.WriteLineAsync("a commit that had to fail committed");
                return 4;
            }
            catch (WrongExpectedVersionException)
            {
            }
        }

        var id = Guid.NewGuid();
        var amount = random.Next(1, 1000);
        var session = scope.ServiceProvider.GetRequiredService<IStoreSession>();
        session.Append(KillRelay.StreamPrefix + id.ToString("N"), ExpectedVersion.NoStream, [new EventData(new KillDeposit(amount))]);
        session.Send(queue, new KillDeposit(amount), new Patterns.Messaging.MessageOptions { MessageId = id });
        await session.CommitAsync();
        Print(string.Create(CultureInfo.InvariantCulture, $"ack {KillRelay.StreamPrefix}{id:N} 1 1 {amount}"));

        // A few hundred commits a second at most: the other process and the test's consumer share the store.
        await Task.Delay(3);
    }
}

if (role == "outbox")
{
    Print("started");
    var random = new Random(seed);
    for (var n = 0; ; n++)
    {
        await using (var scope = provider.CreateAsyncScope())
        {
            if (n % 4 == 3)
            {
                var doomed = scope.ServiceProvider.GetRequiredService<IStoreSession>();
                doomed.Append("kill-outbox-conflict", ExpectedVersion.Exact(999), [new EventData(new KillDeposit(-1))]);
                doomed.Send(KillProjection.OutboxQueue, new KillDeposit(-1));
                try
                {
                    await doomed.CommitAsync();
                    await Console.Error.WriteLineAsync("a commit that had to fail committed");
                    return 4;
                }
                catch (WrongExpectedVersionException)
                {
                }
            }

            var id = Guid.NewGuid();
            var amount = random.Next(1, 1000);
            var session = scope.ServiceProvider.GetRequiredService<IStoreSession>();
            session.Append("kill-outbox-" + id.ToString("N"), ExpectedVersion.NoStream, [new EventData(new KillDeposit(amount))]);
            session.Send(KillProjection.OutboxQueue, new KillDeposit(amount), new Patterns.Messaging.MessageOptions { MessageId = id });
            await session.CommitAsync();
            Print(string.Create(CultureInfo.InvariantCulture, $"ack kill-outbox-{id:N} 1 1 {amount}"));
        }
    }
}

if (role != "append")
{
    foreach (var service in provider.GetServices<IHostedService>())
    {
        await service.StartAsync(CancellationToken.None);
    }

    tasks.Add(Task.Run(async () =>
    {
        SubscriptionState? last = null;
        while (true)
        {
            var state = subscriptions.GetStatus(KillProjection.Name).State;
            if (state != last)
            {
                Print("state " + state);
                last = state;
            }

            if (state == SubscriptionState.Faulted)
            {
                await Console.Error.WriteLineAsync(subscriptions.GetStatus(KillProjection.Name).Error?.ToString());
                Environment.Exit(3);
            }

            await Task.Delay(10);
        }
    }));
}

Print("started");
if (role != "project")
{
    // PostgreSQL commits concurrent appends in groups: a few appenders at once get acknowledgements at its pace. SQLite
    // has one writer per file, shared by every process: one appender leaves room for the other processes' writes (leases,
    // projection commits), which would otherwise wait in SQLite's busy handler.
    var appenders = args[0] == "sqlite" ? 1 : 3;
    for (var w = 0; w < appenders; w++)
    {
        var random = new Random(seed + w);
        tasks.Add(Task.Run(async () =>
        {
            while (true)
            {
                var stream = KillProjection.Account(random.Next(KillProjection.Accounts));
                var amounts = Enumerable.Range(0, 1 + random.Next(3)).Select(_ => (long)random.Next(1, 1000)).ToArray();
                var result = await store.AppendAsync(stream, ExpectedVersion.Any, amounts.Select(a => new EventData(new KillDeposit(a))).ToArray());
                Print(string.Create(CultureInfo.InvariantCulture, $"ack {stream} {result.Version} {amounts.Length} {amounts.Sum()}"));
            }
        }));
    }
}

await Task.WhenAll(tasks);
return 0;

/// <summary>Standard output, one whole line at a time, shared by the main flow and the lease reports.</summary>
internal static class RelayOutput
{
    private static readonly Lock Gate = new();

    public static void Print(string line)
    {
        lock (Gate)
        {
            Console.Out.WriteLine(line);
            Console.Out.Flush();
        }
    }
}
