using System.Text;
using Patterns.Storage;

namespace Patterns.Postgres.Tests;

internal static class TestEvents
{
    public static readonly DateTimeOffset Epoch = new(2030, 1, 2, 3, 4, 5, TimeSpan.Zero);

    public static SerializedEvent One(string type = "thing-happened", string? body = null) =>
        new(Guid.NewGuid(), type, Encoding.UTF8.GetBytes(body ?? "{}"), Epoch);

    public static SerializedEvent[] Many(int count, string type = "thing-happened") =>
        Enumerable.Range(0, count).Select(i => One(type, $"{{\"i\":{i}}}")).ToArray();

    public static async Task<List<T>> ToListAsync<T>(this IAsyncEnumerable<T> source)
    {
        var list = new List<T>();
        await foreach (var item in source)
        {
            list.Add(item);
        }

        return list;
    }
}
