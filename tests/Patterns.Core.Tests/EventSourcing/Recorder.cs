using Patterns.EventSourcing;

namespace Patterns.Core.Tests.EventSourcing;

/// <summary>Records the events a handler saw and lets a test wait for a count without sleeping.</summary>
public sealed class Recorder
{
    private readonly Lock _gate = new();
    private readonly List<RecordedEvent> _events = [];
    private readonly List<(int Count, TaskCompletionSource Signal)> _waiters = [];

    public IReadOnlyList<RecordedEvent> Events
    {
        get
        {
            lock (_gate)
            {
                return [.. _events];
            }
        }
    }

    public ValueTask RecordAsync(RecordedEvent e, CancellationToken cancellationToken = default)
    {
        Record(e);
        return ValueTask.CompletedTask;
    }

    public void Record(RecordedEvent e)
    {
        List<TaskCompletionSource> ready = [];
        lock (_gate)
        {
            _events.Add(e);
            for (var i = _waiters.Count - 1; i >= 0; i--)
            {
                if (_events.Count >= _waiters[i].Count)
                {
                    ready.Add(_waiters[i].Signal);
                    _waiters.RemoveAt(i);
                }
            }
        }

        ready.ForEach(r => r.TrySetResult());
    }

    public Task WaitForCountAsync(int count)
    {
        var signal = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (_gate)
        {
            if (_events.Count >= count)
            {
                return Task.CompletedTask;
            }

            _waiters.Add((count, signal));
        }

        return signal.Task.WaitAsync(TestHost.Wait);
    }
}
