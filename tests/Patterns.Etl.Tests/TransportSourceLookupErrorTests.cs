using Microsoft.Extensions.DependencyInjection;
using Patterns.Queues;

namespace Patterns.Etl.Tests;

/// <summary>How a lookup's failure is classified: the dimension's (no message blamed) or the looked-up row's (its message blamed).</summary>
public sealed partial class TransportSourceTests
{
    [Theory]
    [InlineData("full", "http")]
    [InlineData("lru", "http")]
    [InlineData("none", "http")]
    [InlineData("full", "own")]
    [InlineData("lru", "own")]
    [InlineData("none", "own")]
    public async Task ALookupWhoseHttpClientTimesOut_BlamesNoMessage_NoneIsDeadLettered_OnceItIsBackEachLoadsOnce(string cache, string timeout)
    {
        // HttpClient reports its own timeout as a TaskCanceledException whose inner error is a TimeoutException; a find
        // that bounds its call with its own CancelAfter ends with a bare cancellation. The run is not cancelled at all:
        // the dimension did not answer in time, an outage, never the row's fault. With maxDeliveries 1 nothing is
        // dead-lettered, and each message loads once when the dimension answers again.
        var queue = "dimension-http-timeout-" + Guid.NewGuid().ToString("N");
        using var host = await StartAsync(queue);
        await SendReadingsAsync(host, queue, 1, 5);

        var up = false;
        Exception HttpTimeout() => timeout == "http"
            ? new TaskCanceledException("The request was canceled due to the configured HttpClient.Timeout of 100 seconds elapsing.", new TimeoutException("The operation was canceled."))
            : new TaskCanceledException("A task was canceled.");
        ValueTask<long> Find(int key) => Volatile.Read(ref up) ? new(key * 100L) : throw HttpTimeout();
        async IAsyncEnumerable<KeyValuePair<int, long>> Load()
        {
            await Task.Yield();
            if (!Volatile.Read(ref up))
            {
                throw HttpTimeout();
            }

            for (var key = 1; key <= 6; key++)
            {
                yield return new(key, key * 100L);
            }
        }

        EtlLookup<int, long> Dimension() => cache switch
        {
            "full" => EtlLookup.Full<int, long>(_ => Load()),
            "lru" => EtlLookup.Lru<int, long>((key, _) => Find(key), capacity: 2),
            _ => EtlLookup.Uncached<int, long>((key, _) => Find(key)),
        };
        EtlPipeline<Reading> Pipeline(RecordingSink sink) => EtlTransport.FromQueue<Reading>(host.Services, queue, maxDeliveries: 1)
            .Lookup(Dimension(), r => r.Id, (r, value) => r with { Value = value })
            .To(sink, "dimension-http-timeout");

        var first = new RecordingSink(failOnBatch: null);
        var down = async () => await Pipeline(first).RunAsync(new EtlRunOptions { BatchSize = 100 }).WaitAsync(Wait);
        await down.Should().ThrowAsync<TaskCanceledException>();
        (await host.Services.GetRequiredService<IDeadLetterQueue>().PeekAsync(queue)).Should().BeEmpty("an HttpClient timeout is the dimension's outage, not the message's fault");

        Volatile.Write(ref up, true);
        await SentinelLoadsTheRestOnceAsync(host, queue, Pipeline, first);
    }

    [Theory]
    [InlineData("file")]
    [InlineData("directory")]
    public async Task ALookupWhoseFindMissesTheKeysFile_BlamesThatMessage_DeadLetteredAlone_TheOthersLoadOnce(string missing)
    {
        // A dimension read key by key from files: the file of key 3 does not exist. FileNotFoundException and
        // DirectoryNotFoundException are IOExceptions, but the key is at fault, every time: were it an outage, no run
        // would ever get past message 3 and nothing would be dead-lettered. It is blamed (maxDeliveries 1) and the others
        // load once.
        var queue = "dimension-missing-file-" + Guid.NewGuid().ToString("N");
        var (host, subscribed) = await StartSignallingAsync(queue);
        using var disposeHost = host;
        var dimension = EtlLookup.Uncached<int, long>((key, _) => key != 3
            ? new(key * 100L)
            : throw (missing == "file" ? new FileNotFoundException("no dimension file for key 3", "dim/3.json") : new DirectoryNotFoundException("no dimension folder for key 3")));
        EtlPipeline<Reading> Pipeline(RecordingSink sink) => EtlTransport.FromQueue<Reading>(host.Services, queue, maxDeliveries: 1)
            .Lookup(dimension, r => r.Id, (r, value) => r with { Value = value })
            .To(sink, "dimension-missing-file");

        var sink = new RecordingSink(failOnBatch: null);
        var running = Pipeline(sink).RunAsync(new EtlRunOptions { BatchSize = 100 });
        await subscribed.WaitAsync(Wait);
        await SendReadingsAsync(host, queue, 1, 5);

        var run = async () => await running.WaitAsync(Wait);
        await run.Should().ThrowAsync<IOException>();
        var letters = host.Services.GetRequiredService<IDeadLetterQueue>();
        (await letters.PeekAsync(queue)).Should().ContainSingle("the message whose key has no file is to blame")
            .Which.Reason.Should().StartWith("ETL job 'dimension-missing-file': stage 1 (Lookup) failed on message ");

        await SendReadingsAsync(host, queue, 6, 6);
        var last = await RunUntilLoadedAsync(Pipeline, sentinel: 6);
        sink.Rows.Concat(last.Rows).Select(r => r.Id).Order().Should().Equal([1, 2, 4, 5, 6]);
    }

    [Theory]
    [InlineData("lru")]
    [InlineData("none")]
    public async Task ALookupCancelledByTheRunsStop_BlamesNoMessage_TheNextRunLoadsEachOnce(string cache)
    {
        // The application stops while find waits on message 3's key: find ends with an OperationCanceledException from the
        // token the run is stopped with (the host's stopping token, which a dimension client is often given too). That is
        // a stop, not the message's fault: with maxDeliveries 1 nothing is dead-lettered, and the next run loads every
        // message once.
        var queue = "dimension-stop-" + Guid.NewGuid().ToString("N");
        using var host = await StartAsync(queue);
        await SendReadingsAsync(host, queue, 1, 5);

        var hanging = true;
        using var cancel = new CancellationTokenSource();
        var entered = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        async ValueTask<long> Find(int key, CancellationToken ct)
        {
            if (key == 3 && Volatile.Read(ref hanging))
            {
                entered.TrySetResult();
                await Task.Delay(Timeout.Infinite, cancel.Token);
            }

            return key * 100L;
        }

        EtlLookup<int, long> Dimension() => cache == "lru"
            ? EtlLookup.Lru<int, long>((key, ct) => Find(key, ct), capacity: 2)
            : EtlLookup.Uncached<int, long>((key, ct) => Find(key, ct));
        EtlPipeline<Reading> Pipeline(RecordingSink sink) => EtlTransport.FromQueue<Reading>(host.Services, queue, maxDeliveries: 1)
            .Lookup(Dimension(), r => r.Id, (r, value) => r with { Value = value })
            .To(sink, "dimension-stop");

        var first = new RecordingSink(failOnBatch: null);
        {
            var running = Pipeline(first).RunAsync(new EtlRunOptions { BatchSize = 100 }, cancel.Token);
            await entered.Task.WaitAsync(Wait);
            cancel.Cancel();
            try
            {
                await running.WaitAsync(Wait);
            }
            catch (OperationCanceledException)
            {
                // A stop may surface as a cancellation: either way nothing is to blame.
            }
        }

        (await host.Services.GetRequiredService<IDeadLetterQueue>().PeekAsync(queue)).Should().BeEmpty("a stop blames no message");

        Volatile.Write(ref hanging, false);
        await SentinelLoadsTheRestOnceAsync(host, queue, Pipeline, first);
    }
}
