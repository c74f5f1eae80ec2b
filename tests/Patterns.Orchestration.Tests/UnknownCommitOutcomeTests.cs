using Microsoft.Extensions.DependencyInjection;
using Patterns.Orchestration.History;
using Patterns.Storage;

namespace Patterns.Orchestration.Tests;

/// <summary>
/// A commit whose outcome the caller does not learn: the store commits it and then reports an error (a connection lost
/// after the commit, or a retried commit that finds its own append and reports a conflict). The instance must go on
/// from what the store holds: what the commit scheduled is sent once, and the workflow completes without a restart.
/// </summary>
public sealed class UnknownCommitOutcomeTests
{
    /// <summary>
    /// "io": a unit committed alone, the connection lost after the commit. "duplicate": what a unit with a signal claim gets
    /// when its group landed and then failed, and it is committed again alone (its append an idempotent retry, its claim
    /// taken). "conflict": a store that reports a conflict for an append it committed.
    /// </summary>
    public static TheoryData<string> Errors => ["io", "duplicate", "conflict"];

    [Theory]
    [MemberData(nameof(Errors))]
    public async Task ACommitThatLandedButReportedAnError_StillSendsWhatItScheduled_AndTheWorkflowCompletes(string error)
    {
        LandThenThrowStore? store = null;
        await using var host = await TestHost.StartAsync(WorkflowEngineTests.All, services: s =>
            s.AddSingleton<IUnitOfWorkStorage>(sp => store = new LandThenThrowStore((IUnitOfWorkStorage)sp.GetRequiredService<IEventStorage>(), error)));

        await host.Client.StartAsync(nameof(SequenceWorkflow), "unknown-outcome", "u");
        var result = await host.ResultAsync<string>("unknown-outcome"); // bounded: fails after TestHost.Wait if stuck

        result.Should().Be("echo-u-1,echo-u-2,echo-u-3");
        store!.Injected.Should().Be(1, "the second activity's commit landed and then reported an error");
        host.Log.Calls.Where(c => c.StartsWith("Echo", StringComparison.Ordinal)).Should().Equal(["Echo:u-1", "Echo:u-2", "Echo:u-3"], "each activity is sent once");
        var history = await host.Client.GetHistoryAsync("unknown-outcome");
        history.Events.Count(e => e.Kind == HistoryEventKind.ActivityScheduled).Should().Be(3);
    }

    /// <summary>Commits the unit that schedules the workflow's second activity, then throws (once).</summary>
    private sealed class LandThenThrowStore(IUnitOfWorkStorage inner, string error) : IUnitOfWorkStorage
    {
        private int _scheduled;
        private int _injected;

        public int Injected => Volatile.Read(ref _injected);

        public bool NumbersOutboxConsecutively => inner.NumbersOutboxConsecutively;

        public async ValueTask<UnitOfWorkResult> CommitAsync(UnitOfWork work, CancellationToken cancellationToken = default)
        {
            var result = await inner.CommitAsync(work, cancellationToken);
            var scheduled = work.Appends.Sum(a => a.Events.Count(e => e.EventType == "wf.ActivityScheduled"));
            if (scheduled > 0 && Interlocked.Add(ref _scheduled, scheduled) - scheduled == 1 && Interlocked.Increment(ref _injected) == 1)
            {
                throw error switch
                {
                    "conflict" => new WrongExpectedVersionException(work.Appends[0].StreamId, work.Appends[0].ExpectedVersion, result.Appends[0].Version),
                    "duplicate" => new DuplicateMessageException("orchestration.signals", "already-claimed"),
                    _ => new IOException("the connection was lost after the commit"),
                };
            }

            return result;
        }
    }
}
