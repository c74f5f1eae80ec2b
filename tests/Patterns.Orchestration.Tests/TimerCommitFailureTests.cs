using System.Globalization;
using Microsoft.Extensions.DependencyInjection;
using Patterns.Orchestration.History;
using Patterns.Orchestration.Runtime;
using Patterns.Storage;

namespace Patterns.Orchestration.Tests;

/// <summary>
/// A timer fires and the workflow task that records it fails (the store unreachable for a moment, nothing committed).
/// The timer's due-time entry is still in the store, so only a restart or a takeover would fire it again: the instance
/// would wait for ever in a process that keeps running. The runtime arms it again after a delay instead.
/// </summary>
public sealed class TimerCommitFailureTests
{
    [Fact]
    public async Task ATimerWhoseFiringFailedToCommit_FiresAgainAfterItsDelay_AndTheWorkflowCompletesOnce()
    {
        FailFirstTimerFiredStore? store = null;
        await using var host = await TestHost.StartAsync(WorkflowEngineTests.All, services: s =>
            s.AddSingleton<IUnitOfWorkStorage>(sp => store = new FailFirstTimerFiredStore((IUnitOfWorkStorage)sp.GetRequiredService<IEventStorage>())));
        var retried = new TaskCompletionSource<TimerRecord>(TaskCreationOptions.RunContinuationsAsynchronously);
        host.Runtime.TimerRetried += timer => retried.TrySetResult(timer);

        await host.Client.StartAsync(nameof(TimerWorkflow), "timer-commit-fails", 30);
        await host.WaitForAsync("timer-commit-fails", HistoryEventKind.TimerStarted);
        host.Time.Advance(TimeSpan.FromMinutes(30));

        var again = await retried.Task.WaitAsync(TestHost.Wait);
        store!.Failed.Should().Be(1);
        again.InstanceId.Should().Be("timer-commit-fails");
        again.DueTicks.Should().Be(host.Time.GetUtcNow().UtcTicks + TimeSpan.TicksPerSecond, "the first retry waits one second");
        host.Time.Advance(TimeSpan.FromSeconds(1));

        var result = await host.ResultAsync<string>("timer-commit-fails"); // bounded: fails after TestHost.Wait if stuck
        double.Parse(result, CultureInfo.InvariantCulture).Should().BeGreaterThanOrEqualTo(30);
        var history = await host.Client.GetHistoryAsync("timer-commit-fails");
        history.Events.Count(e => e.Kind == HistoryEventKind.TimerFired).Should().Be(1);
        host.Log.Count("timer-done").Should().Be(1);
    }

    /// <summary>Fails the first unit that records a timer's firing, before committing anything.</summary>
    private sealed class FailFirstTimerFiredStore(IUnitOfWorkStorage inner) : IUnitOfWorkStorage
    {
        private int _failed;

        public int Failed => Volatile.Read(ref _failed);

        public bool NumbersOutboxConsecutively => inner.NumbersOutboxConsecutively;

        public ValueTask<UnitOfWorkResult> CommitAsync(UnitOfWork work, CancellationToken cancellationToken = default)
        {
            if (work.Appends.Any(a => a.Events.Any(e => e.EventType == "wf.TimerFired")) && Interlocked.CompareExchange(ref _failed, 1, 0) == 0)
            {
                throw new IOException("the store could not be reached");
            }

            return inner.CommitAsync(work, cancellationToken);
        }
    }
}
