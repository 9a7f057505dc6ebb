/// A binary min-heap of doubles, for the queue's ETAs.
struct MinHeap {
    private var items: [Double]

    init(_ items: [Double]) {
        self.items = []
        self.items.reserveCapacity(items.count + 1)
        for item in items { push(item) }
    }

    var isEmpty: Bool { items.isEmpty }

    mutating func push(_ value: Double) {
        items.append(value)
        var child = items.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard items[child] < items[parent] else { break }
            items.swapAt(child, parent)
            child = parent
        }
    }

    /// The smallest value, removed; `.infinity` when empty.
    mutating func popMin() -> Double {
        guard let last = items.popLast() else { return .infinity }
        guard !items.isEmpty else { return last }
        let top = items[0]
        items[0] = last
        var parent = 0
        while true {
            let left = 2 * parent + 1, right = left + 1
            var smallest = parent
            if left < items.count && items[left] < items[smallest] { smallest = left }
            if right < items.count && items[right] < items[smallest] { smallest = right }
            guard smallest != parent else { return top }
            items.swapAt(parent, smallest)
            parent = smallest
        }
    }
}
