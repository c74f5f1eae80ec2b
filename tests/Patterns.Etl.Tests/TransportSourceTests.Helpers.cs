using System.Runtime.CompilerServices;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Patterns.Queues;

namespace Patterns.Etl.Tests;

/// <summary>The setup the queue source's tests share: sending readings, starting a host that reports its subscription, and running until a sentinel is loaded.</summary>
public sealed partial class TransportSourceTests
{
    /// <summary>Sends readings <paramref name="from"/> to <paramref name="to"/> (value 0, or <paramref name="value"/> of the id) to <paramref name="queue"/>.</summary>
    private static async Task SendReadingsAsync(IHost host, string queue, int from, int to, Func<int, decimal>? value = null)
    {
        var sender = host.Services.GetRequiredService<IQueueSender>();
        for (var id = from; id <= to; id++)
        {
            await sender.SendAsync(queue, new Reading(id, value?.Invoke(id) ?? 0));
        }
    }

    /// <summary>
    /// Starts an in-memory host whose transport completes the returned task once a run has subscribed: messages sent after
    /// it are held by the run at once (the in-memory queue hands messages buffered before a consumer came to one worker).
    /// </summary>
    private static async Task<(IHost Host, Task Subscribed)> StartSignallingAsync(string queue)
    {
        var subscribed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var host = await StartAsync(queue, rabbitMq: false, inner => new SignallingTransport(inner, subscribed));
        return (host, subscribed.Task);
    }

    /// <summary>Starts a host (in memory, or on RabbitMQ) and prepares messages a run is to hold at once (see <see cref="HeldMessages"/>).</summary>
    private static async Task<(IHost Host, HeldMessages Held)> StartHoldingAsync(string queue, bool rabbitMq, Func<IQueueSender, Task> send)
    {
        var subscribed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var host = await StartAsync(queue, rabbitMq, rabbitMq ? null : inner => new SignallingTransport(inner, subscribed));
        var held = new HeldMessages(subscribed.Task, () => send(host.Services.GetRequiredService<IQueueSender>()));
        if (rabbitMq)
        {
            await held.SendAsync();
        }

        return (host, held);
    }

    /// <summary>
    /// Runs the pipeline into a fresh <see cref="RecordingSink"/> until it has loaded the row of id <paramref name="sentinel"/>
    /// (a message sent after everything the test expects), then stops it; checks that the run reports the stop.
    /// </summary>
    /// <returns>The sink, holding what the run loaded.</returns>
    private static async Task<RecordingSink> RunUntilLoadedAsync(Func<RecordingSink, EtlPipeline<Reading>> pipeline, int sentinel, EtlRunOptions? options = null, HashSet<string>? consumed = null)
    {
        var sink = new RecordingSink(failOnBatch: null, consumed);
        using var stop = new CancellationTokenSource(Wait);
        sink.OnCommit = () =>
        {
            if (sink.Rows.Any(r => r.Id == sentinel))
            {
                stop.Cancel();
            }
        };
        (await pipeline(sink).RunAsync(options ?? new EtlRunOptions { BatchSize = 100 }, stop.Token)).Status.Should().Be(EtlRunStatus.Stopped);
        return sink;
    }

    /// <summary>
    /// Sends message 1 (one row), message 2 (<paramref name="rows"/> rows, too many for one commit) and message 3 (one
    /// row); runs twice with maxDeliveries 2, each run failing on message 2 with <paramref name="error"/> (a wildcard
    /// pattern), after <paramref name="eachRun"/> checks its sink; then checks that only message 2 is dead-lettered (its
    /// reason containing <paramref name="reason"/>) and that messages 1, 3 and a sentinel 4 load exactly once. Row ids are
    /// the message id × <paramref name="factor"/> plus the row's index.
    /// </summary>
    private static async Task AnOversizedMessageIsBlamedAloneAsync(
        bool rabbitMq,
        string job,
        int rows,
        int factor,
        EtlRunOptions options,
        Func<EtlPipeline<Reading>, EtlPipeline<Reading>> measure,
        string error,
        string reason,
        Action<RecordingSink>? eachRun = null)
    {
        var queue = job + "-" + Guid.NewGuid().ToString("N");
        using var host = await StartAsync(queue, rabbitMq);
        var sender = host.Services.GetRequiredService<IQueueSender>();
        await sender.SendAsync(queue, new Reading(1, 1));
        await sender.SendAsync(queue, new Reading(2, rows));
        await sender.SendAsync(queue, new Reading(3, 1));
        var consumed = new HashSet<string>(StringComparer.Ordinal);
        var loaded = new List<int>();
        EtlPipeline<Reading> Pipeline(RecordingSink sink) => measure(EtlTransport.FromQueue<Reading>(host.Services, queue, maxDeliveries: 2)
            .SelectMany(r => Enumerable.Range(0, (int)r.Value).Select(i => new Reading((r.Id * factor) + i, i)))
            .To(sink, job));

        for (var attempt = 1; attempt <= 2; attempt++)
        {
            var sink = new RecordingSink(failOnBatch: null, consumed);
            var run = async () => await Pipeline(sink).RunAsync(options).WaitAsync(Wait);
            (await run.Should().ThrowAsync<InvalidOperationException>($"run {attempt} reaches message 2")).WithMessage(error);
            eachRun?.Invoke(sink);
            loaded.AddRange(sink.Rows.Select(r => r.Id));
        }

        var letter = (await host.Services.GetRequiredService<IDeadLetterQueue>().PeekAsync(queue)).Should().ContainSingle("only the message too big for a batch is blamed").Which;
        letter.Reason.Should().StartWith($"ETL job '{job}': the loader (the message's rows do not fit in one batch) failed on message {letter.Envelope.MessageId:N} on delivery 2 with System.InvalidOperationException: ")
            .And.Contain(reason);

        // Nothing else is left but message 3 (if the second run did not load it): a sentinel sent now comes after it.
        await sender.SendAsync(queue, new Reading(4, 1));
        var last = await RunUntilLoadedAsync(Pipeline, sentinel: 4 * factor, options, consumed);
        loaded.AddRange(last.Rows.Select(r => r.Id));

        loaded.Order().Should().Equal([1 * factor, 3 * factor, 4 * factor], "the other messages are loaded exactly once, nothing of message 2");
        consumed.Should().HaveCount(3);
    }

    /// <summary>Sends the sentinel reading (id 6), runs until it is loaded, and checks that what both runs loaded is readings 1 to 6 once each, and that nothing was dead-lettered.</summary>
    /// <returns>Every row the first and the last run loaded.</returns>
    private static async Task<List<Reading>> SentinelLoadsTheRestOnceAsync(IHost host, string queue, Func<RecordingSink, EtlPipeline<Reading>> pipeline, RecordingSink first)
    {
        await SendReadingsAsync(host, queue, 6, 6);
        var last = await RunUntilLoadedAsync(pipeline, sentinel: 6);
        var loaded = first.Rows.Concat(last.Rows).ToList();
        loaded.Select(r => r.Id).Order().Should().Equal([1, 2, 3, 4, 5, 6], "every message loads exactly once once the dimension is back");
        (await host.Services.GetRequiredService<IDeadLetterQueue>().PeekAsync(queue)).Should().BeEmpty();
        return loaded;
    }

    /// <summary>
    /// Messages a run is to hold at once: on RabbitMQ they are sent as the host starts (the broker hands a new consumer up
    /// to its prefetch at once); in memory, once a run has subscribed (the in-memory queue hands messages buffered before a
    /// consumer came to one worker, one at a time, each its own batch).
    /// </summary>
    private sealed class HeldMessages(Task subscribed, Func<Task> send)
    {
        private bool _sent;

        /// <summary>Sends the messages now.</summary>
        public async Task SendAsync()
        {
            _sent = true;
            await send();
        }

        /// <summary>Sends the messages once a run has subscribed, unless they were sent already.</summary>
        public async Task SendOnceSubscribedAsync()
        {
            if (!_sent)
            {
                await subscribed.WaitAsync(Wait);
                await SendAsync();
            }
        }
    }
}

/// <summary>A SQLite table used as a lookup's dimension (key to key × 100, keys 1 to 6), read with a 1 s busy timeout.</summary>
internal static class SqliteDimension
{
    public static string Create(TempDir dir)
    {
        var connectionString = $"Data Source={dir.File("dimension.db")};Pooling=False;Default Timeout=1";
        using var connection = new SqliteConnection(connectionString);
        connection.Open();
        using var command = connection.CreateCommand();
        command.CommandText = "CREATE TABLE dim (id INTEGER PRIMARY KEY, value INTEGER NOT NULL); INSERT INTO dim VALUES (1, 100), (2, 200), (3, 300), (4, 400), (5, 500), (6, 600);";
        command.ExecuteNonQuery();
        return connectionString;
    }

    /// <summary>Opens a connection that holds an exclusive lock on the dimension until it is disposed: every read of it fails with SQLITE_BUSY.</summary>
    public static SqliteConnection Lock(string connectionString)
    {
        var locker = new SqliteConnection(connectionString);
        locker.Open();
        using var exclusive = locker.CreateCommand();
        exclusive.CommandText = "BEGIN EXCLUSIVE";
        exclusive.ExecuteNonQuery();
        return locker;
    }

    /// <summary>The dimension with a cache (<c>full</c>, <c>lru</c> of 2 entries, or none); <paramref name="rejects"/> is a key whose find throws.</summary>
    public static EtlLookup<int, long> Lookup(string cache, string connectionString, int? rejects = null) => cache switch
    {
        "full" => EtlLookup.Full<int, long>(ct => ReadAllAsync(connectionString, ct)),
        "lru" => EtlLookup.Lru<int, long>((key, ct) => FindAsync(connectionString, key, rejects, ct), capacity: 2),
        _ => EtlLookup.Uncached<int, long>((key, ct) => FindAsync(connectionString, key, rejects, ct)),
    };

    private static async IAsyncEnumerable<KeyValuePair<int, long>> ReadAllAsync(string connectionString, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        await using var connection = new SqliteConnection(connectionString);
        await connection.OpenAsync(cancellationToken);
        await using var command = connection.CreateCommand();
        command.CommandText = "SELECT id, value FROM dim";
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        while (await reader.ReadAsync(cancellationToken))
        {
            yield return new(reader.GetInt32(0), reader.GetInt64(1));
        }
    }

    private static async ValueTask<long> FindAsync(string connectionString, int key, int? rejects, CancellationToken cancellationToken)
    {
        if (key == rejects)
        {
            throw new InvalidOperationException("poison row 3");
        }

        await using var connection = new SqliteConnection(connectionString);
        await connection.OpenAsync(cancellationToken);
        await using var command = connection.CreateCommand();
        command.CommandText = "SELECT value FROM dim WHERE id = $id";
        command.Parameters.AddWithValue("$id", key);
        return Convert.ToInt64(await command.ExecuteScalarAsync(cancellationToken), System.Globalization.CultureInfo.InvariantCulture);
    }
}
