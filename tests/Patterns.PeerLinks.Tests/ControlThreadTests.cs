using System.Threading.Channels;
using Patterns.PeerLinks.Links;

namespace Patterns.PeerLinks.Tests;

/// <summary>The thread a node's control loops resume on.</summary>
public sealed class ControlThreadTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(60);

    [Fact(Timeout = 60_000)]
    public async Task Resume_ATaskCompletedElsewhere_ContinuesOnTheControlThread_WithNoContextSet()
    {
        using var thread = CreateSut();
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var seen = RunAsync(thread, async () =>
        {
            await thread.Resume(done.Task);
            return (thread.IsCurrent, SynchronizationContext.Current);
        });

        _ = Task.Run(done.SetResult, TestContext.Current.CancellationToken);
        var (onThread, context) = await seen.WaitAsync(Bound, TestContext.Current.CancellationToken);

        onThread.Should().BeTrue("the continuation was posted to the control thread");
        context.Should().BeNull("work on the control thread never runs under its context, so nothing it calls captures it");
    }

    [Fact(Timeout = 60_000)]
    public async Task Resume_AChannelRead_ContinuesOnTheControlThread()
    {
        using var thread = CreateSut();
        var signal = Channel.CreateBounded<bool>(1);
        var seen = RunAsync(thread, async () =>
        {
            var value = await thread.Resume(signal.Reader.ReadAsync());
            return (thread.IsCurrent, value);
        });

        await signal.Writer.WriteAsync(true, TestContext.Current.CancellationToken);
        var (onThread, value) = await seen.WaitAsync(Bound, TestContext.Current.CancellationToken);

        onThread.Should().BeTrue("a control writer's wake-up resumes it on the control thread, not on the pool");
        value.Should().BeTrue();
    }

    [Fact(Timeout = 60_000)]
    public async Task Resume_AFaultedTask_ThrowsItsException()
    {
        using var thread = CreateSut();
        var done = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        var seen = RunAsync(thread, async () => await thread.Resume(done.Task));

        done.SetException(new IOException("the connection ended"));

        await seen.Awaiting(t => t.WaitAsync(Bound, TestContext.Current.CancellationToken)).Should().ThrowAsync<IOException>().WithMessage("the connection ended");
    }

    [Fact(Timeout = 60_000)]
    public async Task Resume_AfterTheThreadStopped_ContinuesOnThePool()
    {
        var thread = CreateSut();
        thread.Dispose();
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var seen = Task.Run(async () =>
        {
            await thread.Resume(done.Task);
            return (thread.IsCurrent, Thread.CurrentThread.IsThreadPoolThread);
        }, TestContext.Current.CancellationToken);

        done.SetResult();
        var (onThread, onPool) = await seen.WaitAsync(Bound, TestContext.Current.CancellationToken);

        onThread.Should().BeFalse();
        onPool.Should().BeTrue("a loop still waiting when the node stops ends on the pool");
    }

    private static ControlThread CreateSut() => new("control-thread-test");

    /// <summary>Starts <paramref name="body"/> on the control thread itself (as a control loop runs after its first wait).</summary>
    private static Task<T> RunAsync<T>(ControlThread thread, Func<Task<T>> body)
    {
        var result = new TaskCompletionSource<Task<T>>(TaskCreationOptions.RunContinuationsAsynchronously);
        thread.Post(_ => result.SetResult(body()), null);
        return result.Task.Unwrap();
    }
}
