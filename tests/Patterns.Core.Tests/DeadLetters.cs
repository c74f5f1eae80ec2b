using Patterns.Queues;
using Patterns.Transport;

namespace Patterns.Core.Tests;

internal static class DeadLetters
{
    /// <summary>
    /// Waits until the dead-letter queue holds <paramref name="count"/> messages. The transport dead-letters a
    /// message just after its handler returns (after the harness has seen the settlement), so this yields
    /// until that has happened, bounded by <see cref="TestHost.Wait"/>.
    /// </summary>
    public static async Task<IReadOnlyList<DeadLetterMessage>> WaitForAsync(IDeadLetterQueue queue, string name, int count)
    {
        var deadline = DateTime.UtcNow + TestHost.Wait;
        while (true)
        {
            var letters = await queue.PeekAsync(name);
            if (letters.Count >= count || DateTime.UtcNow > deadline)
            {
                letters.Should().HaveCount(count, $"the dead-letter queue of '{name}'");
                return letters;
            }

            await Task.Yield();
        }
    }
}
