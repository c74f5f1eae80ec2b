using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Time.Testing;
using Patterns.Batching;
using Patterns.Hosting;
using Patterns.Storage;
using Patterns.Testing;

namespace Patterns.Core.Tests.Batching;

public sealed class BatcherDeadLetterStoreTests
{
    [Fact]
    public async Task HostStop_DrainDeadlinePassesWithAStore_UnhandledItemsAreDocumentsInTheDeadLetterCollection()
    {
        var fake = new FakeTimeProvider();
        var time = new TimerTracker(fake);
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var host = await TestHost.StartAsync(
            b =>
            {
                b.Services.Configure<PatternsOptions>(o => o.ShutdownTimeout = TimeSpan.FromSeconds(5));
                b.AddEventSourcing();
                b.AddBatching(batching => batching.AddBatcher<int>(
                    async (batch, ct) =>
                    {
                        started.TrySetResult();
                        await Task.Delay(Timeout.Infinite, ct);
                    },
                    o =>
                    {
                        o.MaxCount = 10;
                        o.MaxAge = Timeout.InfiniteTimeSpan;
                    },
                    name: "slow"));
            },
            time);
        var batcher = host.Services.GetRequiredKeyedService<Batcher<int>>("slow");
        await batcher.AddAsync(1);
        await batcher.AddAsync(2);

        var stopping = host.StopAsync();
        await started.Task.WaitAsync(TestHost.Wait);
        stopping.IsCompleted.Should().BeFalse("the handler runs until the drain deadline");
        fake.Advance(TimeSpan.FromSeconds(5));
        await stopping.WaitAsync(TestHost.Wait);

        var documents = new List<JsonElement>();
        await foreach (var (_, bytes) in host.Services.GetRequiredService<IDocumentStorage>().ListAsync(BatchDeadLetters.Collection))
        {
            documents.Add(JsonDocument.Parse(bytes).RootElement.Clone());
        }

        documents.Select(d => d.GetProperty("item").GetRawText()).Should().BeEquivalentTo(["1", "2"], "the items the handler did not finish before the deadline are recorded durably, not only logged");
        documents.Should().OnlyContain(d => d.GetProperty("batcher").GetString() == "slow" && d.GetProperty("exceptionType").GetString()!.Contains("Canceled", StringComparison.Ordinal));
        host.Dispose();
    }
}
