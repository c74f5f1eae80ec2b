// Streaming sample: a batch consumer of a queue, and an event-time windowed stream over a pub/sub subscription,
// on the in-memory transport.
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Patterns.Batching;
using Patterns.PubSub;
using Patterns.Queues;
using Patterns.Streaming;
using Patterns.Transport;
using Polly;
using Polly.Retry;
using StreamingSample;

var builder = Host.CreateApplicationBuilder(args);
builder.Logging.SetMinimumLevel(LogLevel.Error);
builder.Services.AddSingleton<Progress>();

// A batch consumer: archive readings 100 at a time (or every 200 ms). One reading is poison: only it is retried,
// then dead-lettered; the rest of its batch is acknowledged.
builder.AddBatching(b => b.AddBatchHandler<Reading, ArchiveBatchHandler>(TransportAddress.Queue("archive"), o =>
{
    o.MaxCount = 100;
    o.MaxAge = TimeSpan.FromMilliseconds(200);
    o.Retry = new RetryStrategyOptions { MaxRetryAttempts = 2, Delay = TimeSpan.FromMilliseconds(10), BackoffType = DelayBackoffType.Constant };
}));

// A windowed stream: average temperature per sensor over 10-second tumbling windows of event time, readings up to
// 3 s out of order; later ones go to the late output.
builder.AddStreaming(s => s.AddPipeline("averages", sp =>
{
    var progress = sp.GetRequiredService<Progress>();
    return DataStream.FromSubscription<Reading>(sp, "readings.*", "averages")
        .WithEventTime(r => r.At, maxOutOfOrderness: TimeSpan.FromSeconds(3))
        .KeyBy(r => r.Sensor)
        .Window(WindowSpec.Tumbling(TimeSpan.FromSeconds(10)), onLate: (late, _) =>
        {
            progress.Late($"late reading of {late.Item.Sensor} at {late.Timestamp:HH:mm:ss} (watermark {late.Watermark:HH:mm:ss})");
            return default;
        })
        .Aggregate((Sum: 0.0, Count: 0), (acc, r) => (acc.Sum + r.Celsius, acc.Count + 1))
        .To(r => progress.Window($"{r.Key} [{r.Start:HH:mm:ss}, {r.End:HH:mm:ss}) average {r.Value.Sum / r.Value.Count:0.00} °C over {r.Value.Count} readings"));
}));

using var host = builder.Build();
await host.StartAsync();
var publisher = host.Services.GetRequiredService<IPublisher>();
var queue = host.Services.GetRequiredService<IQueueSender>();
var progress = host.Services.GetRequiredService<Progress>();

// 30 s of readings from three sensors, shuffled by up to 2 s; then a late one, then readings at 45 s that move
// the watermark past the last window.
var origin = new DateTimeOffset(2024, 6, 1, 12, 0, 0, TimeSpan.Zero);
var random = new Random(1);
var readings = Enumerable.Range(0, 30)
    .SelectMany(second => new[] { "north", "south", "east" }.Select(sensor => new Reading(sensor, origin.AddSeconds(second), 20 + random.Next(100) / 10.0)))
    .OrderBy(r => r.At.AddSeconds(random.NextDouble() * 2))
    .ToList();
foreach (var reading in readings)
{
    await publisher.PublishAsync($"readings.{reading.Sensor}", reading);
}

await publisher.PublishAsync("readings.north", new Reading("north", origin.AddSeconds(4), 99));
foreach (var sensor in new[] { "north", "south", "east" })
{
    await publisher.PublishAsync($"readings.{sensor}", new Reading(sensor, origin.AddSeconds(45), 20));
}

for (var i = 0; i < 250; i++)
{
    await queue.SendAsync("archive", new Reading($"archive-{i}", origin.AddSeconds(i), i == 13 ? double.NaN : 21));
}

await progress.WaitAsync(windows: 9, late: 1, archived: 249);
var deadLetters = await host.Services.GetRequiredService<IDeadLetterQueue>().PeekAsync("archive");
await host.StopAsync();
Console.WriteLine($"done: {progress.Windows} window results, {progress.LateCount} late reading, {progress.Archived} archived in {progress.Batches} batches, {deadLetters.Count} dead-lettered ({deadLetters.SingleOrDefault()?.ExceptionMessage})");
return deadLetters.Count == 1 ? 0 : 1;

namespace StreamingSample
{
    public sealed record Reading(string Sensor, DateTimeOffset At, double Celsius);

    public sealed class ArchiveBatchHandler(Progress progress) : IBatchHandler<Reading>
    {
        public ValueTask HandleAsync(Batch<Reading> batch, CancellationToken cancellationToken)
        {
            var archived = 0;
            for (var i = 0; i < batch.Count; i++)
            {
                if (double.IsNaN(batch[i].Celsius))
                {
                    batch.Fail(i, new InvalidDataException($"{batch[i].Sensor} has no temperature"));
                    continue;
                }

                archived++;
            }

            progress.Batch(batch.Count, archived, batch.Attempt);
            return ValueTask.CompletedTask;
        }
    }

    /// <summary>Collects what the handlers did, so the sample waits on signals instead of sleeping.</summary>
    public sealed class Progress
    {
        private readonly Lock _gate = new();
        private readonly TaskCompletionSource _done = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private (int Windows, int Late, int Archived) _want = (int.MaxValue, int.MaxValue, int.MaxValue);

        public int Windows { get; private set; }

        public int LateCount { get; private set; }

        public int Archived { get; private set; }

        public int Batches { get; private set; }

        public void Window(string line) => Record(() => Windows++, $"stream   {line}");

        public void Late(string line) => Record(() => LateCount++, $"stream   {line}");

        public void Batch(int size, int archived, int attempt) =>
            Record(
                () =>
                {
                    Archived += archived;
                    Batches++;
                },
                $"batch    {size} reading(s){(attempt > 0 ? $" (retry {attempt})" : string.Empty)}, {archived} archived");

        public Task WaitAsync(int windows, int late, int archived)
        {
            lock (_gate)
            {
                _want = (windows, late, archived);
            }

            Record(() => { }, null);
            return _done.Task.WaitAsync(TimeSpan.FromSeconds(30));
        }

        private void Record(Action update, string? line)
        {
            lock (_gate)
            {
                update();
                if (line is not null)
                {
                    Console.WriteLine(line);
                }

                if (Windows >= _want.Windows && LateCount >= _want.Late && Archived >= _want.Archived)
                {
                    _done.TrySetResult();
                }
            }
        }
    }
}
