using System.Runtime.CompilerServices;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Time.Testing;
using Patterns.EventSourcing.InMemory;
using Patterns.Storage;
using Patterns.Streaming;
using Patterns.Testing;

namespace Patterns.Core.Tests.Streaming;

public sealed class StreamingLeaseTests
{
    [Fact]
    public async Task TwoHostsWithOneStore_PipelineRunsInOneAtATime_TheOtherTakesOverWhenTheFirstStops()
    {
        var fake = new FakeTimeProvider();
        var time = new TimerTracker(fake);
        var storage = new InMemoryEventStorage(new InMemoryEventStorageOptions(), time);
        var firstRunning = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var secondRunning = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Action<HostApplicationBuilder> Configure(TaskCompletionSource running) => b =>
        {
            b.AddEventSourcing(es => es.UseStorage(_ => storage));
            b.AddStreaming(s => s.AddPipeline("single", _ => DataStream.From(Idle(running)).To(_ => { })));
        };

        using var first = await TestHost.StartAsync(Configure(firstRunning), time);
        await firstRunning.Task.WaitAsync(TestHost.Wait);
        using var second = await TestHost.StartAsync(Configure(secondRunning), time);
        (await storage.TryAcquireLeaseAsync("stream:single", "someone-else", TimeSpan.FromSeconds(30))).Should().BeNull("the first host holds the pipeline's lease");
        secondRunning.Task.IsCompleted.Should().BeFalse("the pipeline runs in one process at a time");

        await first.StopAsync().WaitAsync(TestHost.Wait);
        using var deadline = new CancellationTokenSource(TestHost.Wait);
        while (!secondRunning.Task.IsCompleted)
        {
            // The second host stands by and tries again every third of the lease's duration.
            deadline.Token.ThrowIfCancellationRequested();
            fake.Advance(TimeSpan.FromSeconds(10));
            await Task.Yield();
        }

        await second.StopAsync().WaitAsync(TestHost.Wait);
    }

    private static async IAsyncEnumerable<int> Idle(TaskCompletionSource running, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        running.TrySetResult();
        await Task.Delay(Timeout.Infinite, cancellationToken).ConfigureAwait(false);
        yield break;
    }
}
